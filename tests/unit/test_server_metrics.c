/* test_server_metrics.c - Prometheus metrics (server/metrics.h): counters by
 * endpoint/model/status, cumulative histogram buckets, gauges, model info
 * labels (escaped), and exact counts under concurrent updates. */
#include "test_util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static char *render(srv_metrics *m, const srv_metrics_gauges *g)
{
    size_t len = 0;
    char *page = srv_metrics_render(m, g, &len);
    assert_non_null(page);
    assert_int_equal(strlen(page), len);
    return page;
}

static void expect_line(const char *page, const char *line)
{
    const char *p = page;
    size_t n = strlen(line);
    while ((p = strstr(p, line))) {
        if ((p == page || p[-1] == '\n') && (p[n] == '\n' || p[n] == 0))
            return;
        p++;
    }
    fail_msg("metrics page lacks the line \"%s\"", line);
}

static void test_counters(void **state)
{
    (void)state;
    const char *names[] = {"minilm", "sst2"};
    srv_metrics *m = srv_metrics_new(2, names);
    assert_non_null(m);
    srv_metrics_request(m, SRV_EP_EMBED, 0, 200, 3000000);
    srv_metrics_request(m, SRV_EP_EMBED, 0, 200, 3000000);
    srv_metrics_request(m, SRV_EP_SENTIMENT, 1, 429, 1000);
    srv_metrics_request(m, SRV_EP_OTHER, -1, 404, 1000);
    srv_metrics_request(m, SRV_EP_EMBED, 7, 418, 1000); /* bad index -> none; odd status -> other */
    int depth[2] = {5, 0};
    srv_metrics_gauges g = {.ready = 1, .draining = 0, .in_flight = 3, .queue_depth = depth};
    char *page = render(m, &g);
    expect_line(page, "# TYPE nlpd_requests_total counter");
    expect_line(page, "nlpd_requests_total{endpoint=\"embed\",model=\"minilm\",status=\"200\"} 2");
    expect_line(page, "nlpd_requests_total{endpoint=\"sentiment\",model=\"sst2\",status=\"429\"} 1");
    expect_line(page, "nlpd_requests_total{endpoint=\"other\",model=\"\",status=\"404\"} 1");
    expect_line(page, "nlpd_requests_total{endpoint=\"embed\",model=\"\",status=\"other\"} 1");
    assert_null(strstr(page, "status=\"500\"")); /* zero counters are not listed */
    expect_line(page, "nlpd_queue_depth{model=\"minilm\"} 5");
    expect_line(page, "nlpd_queue_depth{model=\"sst2\"} 0");
    expect_line(page, "nlpd_ready 1");
    expect_line(page, "nlpd_draining 0");
    expect_line(page, "nlpd_requests_in_flight 3");
    free(page);
    srv_metrics_free(m);
}

static void test_histograms(void **state)
{
    (void)state;
    const char *names[] = {"m"};
    srv_metrics *m = srv_metrics_new(1, names);
    srv_metrics_request(m, SRV_EP_QA, 0, 200, 2000000);    /* 2 ms */
    srv_metrics_request(m, SRV_EP_QA, 0, 200, 200000000);  /* 200 ms */
    srv_metrics_request(m, SRV_EP_QA, 0, 200, 90000000000); /* 90 s: +Inf only */
    srv_metrics_job(m, 0, 1000000, 4000000);
    srv_metrics_batch(m, 0, 3, 96);
    srv_metrics_batch(m, 0, 64, 8192);
    srv_metrics_batch(m, -1, 1, 1); /* ignored */
    char *page = render(m, NULL);
    expect_line(page, "# TYPE nlpd_request_duration_seconds histogram");
    expect_line(page, "nlpd_request_duration_seconds_bucket{endpoint=\"qa\",le=\"0.001\"} 0");
    expect_line(page, "nlpd_request_duration_seconds_bucket{endpoint=\"qa\",le=\"0.0025\"} 1");
    expect_line(page, "nlpd_request_duration_seconds_bucket{endpoint=\"qa\",le=\"0.25\"} 2");
    expect_line(page, "nlpd_request_duration_seconds_bucket{endpoint=\"qa\",le=\"30\"} 2");
    expect_line(page, "nlpd_request_duration_seconds_bucket{endpoint=\"qa\",le=\"+Inf\"} 3");
    expect_line(page, "nlpd_request_duration_seconds_count{endpoint=\"qa\"} 3");
    expect_line(page, "nlpd_request_duration_seconds_sum{endpoint=\"qa\"} 90.202");
    expect_line(page, "nlpd_queue_duration_seconds_bucket{model=\"m\",le=\"0.001\"} 1");
    expect_line(page, "nlpd_inference_duration_seconds_bucket{model=\"m\",le=\"0.0025\"} 0");
    expect_line(page, "nlpd_inference_duration_seconds_bucket{model=\"m\",le=\"0.005\"} 1");
    expect_line(page, "nlpd_batch_size_bucket{model=\"m\",le=\"4\"} 1");
    expect_line(page, "nlpd_batch_size_bucket{model=\"m\",le=\"64\"} 2");
    expect_line(page, "nlpd_batch_size_sum{model=\"m\"} 67");
    expect_line(page, "nlpd_batch_tokens_bucket{model=\"m\",le=\"64\"} 0");
    expect_line(page, "nlpd_batch_tokens_bucket{model=\"m\",le=\"256\"} 1");
    expect_line(page, "nlpd_batch_tokens_bucket{model=\"m\",le=\"8192\"} 2");
    expect_line(page, "nlpd_batch_tokens_count{model=\"m\"} 2");
    expect_line(page, "nlpd_ready 0");
    free(page);
    srv_metrics_free(m);
}

static void test_model_info(void **state)
{
    (void)state;
    const char *names[] = {"a", "b"};
    srv_metrics *m = srv_metrics_new(2, names);
    char *page = render(m, NULL);
    assert_null(strstr(page, "nlpd_model_info{")); /* nothing loaded yet */
    free(page);
    srv_metrics_model_info(m, 1, "v\"1\\\n", "embed", "BertModel", "cpu");
    srv_metrics_model_info(m, 5, "x", "x", "x", "x"); /* ignored */
    page = render(m, NULL);
    expect_line(page, "nlpd_model_info{model=\"b\",version=\"v\\\"1\\\\\\n\",task=\"embed\","
                      "architecture=\"BertModel\",device=\"cpu\"} 1");
    free(page);
    srv_metrics_model_info(m, 1, "v2", "embed", NULL, "cpu"); /* a swap replaces the labels */
    page = render(m, NULL);
    expect_line(page, "nlpd_model_info{model=\"b\",version=\"v2\",task=\"embed\","
                      "architecture=\"\",device=\"cpu\"} 1");
    free(page);
    srv_metrics_free(m);
}

static void *hammer(void *arg)
{
    srv_metrics *m = arg;
    for (int i = 0; i < 20000; i++) {
        srv_metrics_request(m, SRV_EP_EMBED, 0, 200, 1000);
        srv_metrics_batch(m, 0, 2, 10);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    const char *names[] = {"m"};
    srv_metrics *m = srv_metrics_new(1, names);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, m), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *page = render(m, NULL);
    expect_line(page, "nlpd_requests_total{endpoint=\"embed\",model=\"m\",status=\"200\"} 80000");
    expect_line(page, "nlpd_batch_size_count{model=\"m\"} 80000");
    expect_line(page, "nlpd_batch_tokens_sum{model=\"m\"} 800000");
    free(page);
    srv_metrics_free(m);
    srv_metrics_free(NULL);
}

TEST_GROUP(server_metrics)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_counters), cmocka_unit_test(test_histograms),
        cmocka_unit_test(test_model_info), cmocka_unit_test(test_concurrent),
    };
    TEST_GROUP_RETURN(t);
}
