"""Issue 9's loop end to end on a tiny model: a daemon serves a repository and takes
feedback; POST /v1/feedback relabels a set of texts; `nlpd-train watch` (the sidecar)
fine-tunes from the served version, gates, publishes; the daemon swaps the new version
in; those texts now get their new labels; zero failed requests throughout. Then
feedback that contradicts the dev data is refused by the gate and the served version
stays.

The model is tests/fixtures/train/tiny_trained (a tiny BERT classifier, labels
negative/positive, trained on "a sentiment word among filler words"). The relabelled
texts are filler words only, which the served model mostly calls one label; the
feedback says the other, so the new version is better on the held-aside feedback and
no worse on dev (whose texts all carry a sentiment word).
"""
import json
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

from conftest import NLPD_TRAIN, ModelSpec, Nlpd, Target, wait_until

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "train" / "tiny_trained"
POS = ["excellent", "wonderful", "great", "superb", "delightful", "fantastic", "lovely",
       "brilliant"]
NEG = ["terrible", "awful", "horrible", "boring", "dreadful", "bad", "poor", "dull"]
FILL = ["the", "movie", "was", "plot", "actor", "film", "story", "and", "it", "a", "really",
        "very", "this", "acting", "music", "quite", "service", "food", "staff", "day"]
TIMEOUT = 180.0


def sentiment_rows(n, seed, flip=False):
    """(text, label): a sentiment word among 3-8 filler words, alternately neg/pos."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lab = i % 2
        words = [rng.choice(FILL) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POS if lab else NEG))
        if flip:
            lab = 1 - lab
        out.append((" ".join(words), "positive" if lab else "negative"))
    return out


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": label}) + "\n")


def versions(t, model):
    r = t.get(f"/v1/models/{model}/versions")
    assert r.status == 200, r.body
    return r.json()


def serving(t, model):
    for v in versions(t, model)["versions"]:
        if v["state"] == "serving":
            return v["version"]
    return None


def labels_of(t, model, texts):
    r = t.post("/v1/sentiment", {"model": model, "texts": texts})
    assert r.status == 200, r.body
    j = r.json()
    return [x["label"] for x in j["results"]], j["version"]


class Load:
    """One client thread classifying without pause; every response recorded."""

    def __init__(self, t, model, texts):
        self.t, self.model, self.texts = t, model, texts
        self.stop = threading.Event()
        self.results = []  # (status or exception, version)
        self.th = threading.Thread(target=self.run)

    def run(self):
        k = 0
        while not self.stop.is_set() and len(self.results) < 20000:
            try:
                r = self.t.post("/v1/sentiment", {"model": self.model,
                                                  "text": self.texts[k % len(self.texts)]})
                self.results.append((r.status, r.json().get("version") if r.status == 200
                                     else r.body[:200]))
            except Exception as e:  # a failed request is a result too
                self.results.append((e, None))
            k += 1

    def __enter__(self):
        self.th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.th.join(60)


def test_feedback_sidecar_publish_swap(tmp_path):
    repo, fbdir = tmp_path / "repo", tmp_path / "fb"
    r = subprocess.run([str(NLPD_TRAIN), "publish", str(TINY), "--repository", str(repo)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    write_jsonl(tmp_path / "train.jsonl", sentiment_rows(160, 1))
    write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(60, 2))
    nlpd = Nlpd(tmp_path / "daemon",
                [ModelSpec("tiny", None, "sentiment", repository=repo, threads=1)],
                extra={"feedback": {"dir": str(fbdir)},
                       "reload": {"rescan_interval_s": 1, "debounce_ms": 50}})
    nlpd.start()
    sidecar = None
    try:
        t = Target("127.0.0.1", nlpd.port, "direct", nlpd)
        assert serving(t, "tiny") == "v000001"
        # Filler-only texts; the feedback gives them the label the model gives least.
        rng = random.Random(3)
        texts = [" ".join(rng.choice(FILL) for _ in range(rng.randint(3, 7))) + f" {i}"
                 for i in range(40)]
        before, v = labels_of(t, "tiny", texts)
        assert v == "v000001"
        target = "positive" if before.count("negative") >= before.count("positive") else "negative"
        assert before.count(target) < len(texts) // 2
        with Load(t, "tiny", texts[:5] + [x for x, _ in sentiment_rows(6, 9)]) as load:
            for k in range(0, len(texts), 10):
                r = t.post("/v1/feedback", {"model": "tiny", "items": [
                    {"text": x, "label": target} for x in texts[k:k + 10]]})
                assert r.status == 202, r.body
            log = open(tmp_path / "sidecar.log", "wb")
            sidecar = subprocess.Popen(
                [str(NLPD_TRAIN), "watch", "--repository", str(repo),
                 "--feedback", str(fbdir / "tiny"), "--min-new", "40", "--interval", "0.2",
                 "--train", str(tmp_path / "train.jsonl"), "--base-ratio", "-1",
                 "--dev", str(tmp_path / "dev.jsonl"), "--epochs", "8", "--lr", "2e-3",
                 "--batch-size", "8", "--max-length", "32", "--threads", "1"],
                stdout=subprocess.DEVNULL, stderr=log)
            log.close()
            sidelog = lambda: (tmp_path / "sidecar.log").read_text()  # noqa: E731
            wait_until(lambda: "published v000002" in sidelog() or "refused" in sidelog()
                       or sidecar.poll() is not None, TIMEOUT, "the sidecar's first run")
            assert "published v000002" in sidelog(), sidelog()
            wait_until(lambda: serving(t, "tiny") == "v000002", TIMEOUT, "v000002 serving")
            after, v = labels_of(t, "tiny", texts)
            assert v == "v000002"
            assert after == [target] * len(texts), (before, after)
            # The version's metadata carries both scores, shown by the versions call.
            meta = [v for v in versions(t, "tiny")["versions"]
                    if v["version"] == "v000002"][0]["metadata"]
            assert meta == json.loads((repo / "v000002" / "nlpd-version.json").read_text())
            assert meta["scores"]["dev"]["new"] >= meta["scores"]["dev"]["old"] - 0.005
            assert meta["base_version"] == "v000001"
            assert meta["scores"]["feedback"]["new"] > meta["scores"]["feedback"]["old"]
            assert meta["feedback_until"] > 0
            # Feedback that contradicts dev: refused, the served version stays.
            for k in range(0, 60, 20):
                r = t.post("/v1/feedback", {"model": "tiny", "items": [
                    {"text": x, "label": y} for x, y in sentiment_rows(60, 4, flip=True)[k:k + 20]]})
                assert r.status == 202, r.body
            wait_until(lambda: "refused" in sidelog() or sidecar.poll() is not None, TIMEOUT,
                       "the sidecar's second run")
            assert "refused (the served v000002 stays): worse on dev" in sidelog(), sidelog()
            assert serving(t, "tiny") == "v000002"
            assert not (repo / "v000003").exists()
        failed = [x for x in load.results if x[0] != 200]
        assert not failed, failed[:5]
        assert len(load.results) > 0
        assert {v for _, v in load.results} <= {"v000001", "v000002"}
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(60) == 0, sidelog()
        assert sidelog().rstrip().endswith("stopped")
        assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["v000001", "v000002"]
    finally:
        if sidecar and sidecar.poll() is None:
            sidecar.kill()
            sidecar.wait()
        problems = nlpd.stop()
        assert not problems, "\n".join(problems)
