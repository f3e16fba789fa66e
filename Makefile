# nlpd - top-level build. See README.md.
#   make            engine library + tools (build/)
#   make test       install deps, fetch the model, run all tests (ASan/UBSan)
#   make run        install deps, fetch the model, build, serve config/nlpd.json on :8080
#   make models     fetch the pretrained encoder into models/
#   make bench      run the benchmarks in bench/
#   make fuzz       run every libFuzzer target (tests/fuzz) for FUZZ_SECONDS each
#   CUDA=auto|0|1   build cuda/ with nvcc when present (auto), never, or always

CC      ?= cc
CUDA    ?= auto
NVCC    ?= nvcc
BUILD   ?= build
SAN     ?= 0

PKGS    := openblas libcjson libutf8proc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# Baseline ISA x86-64-v2; faster kernels are chosen at run time (DESIGN §6).
ARCH_FLAGS := $(if $(filter x86_64,$(shell uname -m)),-march=x86-64-v2 -mtune=generic,)
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fno-math-errno $(ARCH_FLAGS) \
           $(PKG_CFLAGS) -MMD -MP
# Include paths per folder make the DESIGN §2 boundary a compile error: engine/ sources
# (and white-box engine tests) see the whole engine tree and include its headers by
# folder ("core/util.h"); server/, trainer/, engine/cli/, bench/ and the other tests see
# only the public API in engine/include/.
PUBLIC_INC := -Iengine/include
ENGINE_INC := -Iengine -Iengine/include
LDLIBS  += $(PKG_LIBS) -lcrypto -lpthread -lm
# SentencePiece (C++) behind engine/tokenizers/spm_shim.cc, the engine's only C++ file.
CXX      ?= g++
CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=c++17 -Wall -Wextra -Werror $(ARCH_FLAGS) $(ENGINE_INC) -MMD -MP
LDLIBS   += -lsentencepiece -lstdc++

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# ---- CUDA probe: nvcc present -> cuda/ sources compile and link in.
ifeq ($(CUDA),auto)
  HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1 || echo 0)
else
  HAVE_NVCC := $(CUDA)
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))
CU_SRCS := $(wildcard cuda/*.cu)
# Real GPU code for the data-centre architectures (A100, H100/H200) plus PTX for newer ones.
NVCC_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
NVCC_FLAGS := -O2 -std=c++17 $(NVCC_ARCH) -Werror all-warnings \
              -Xcompiler -Wall,-Wextra,-Werror,-fPIC $(ENGINE_INC) -Icuda -MMD -MP
# The CUDA backend (cuda/*.cu) is compiled and linked only once it has sources.
ifeq ($(HAVE_NVCC)$(if $(CU_SRCS),1,0),11)
  CU_OBJS := $(CU_SRCS:%.cu=$(BUILD)/%.o)
  CFLAGS  += -DNLPD_WITH_CUDA=1
  LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart
else
  CU_OBJS :=
endif
# Test-only: the same cuda/*.cu compiled for the host against the CUDA emulation of
# tests/cuda_emu/ (registered as backend "cuda-emu" in the unit tests; never in nlpd).
EMU_CXXFLAGS := $(CXXFLAGS) -DNLPD_CUDA_EMU -ffp-contract=off -Icuda -Itests/cuda_emu \
                $(PKG_CFLAGS)
EMU_OBJS := $(CU_SRCS:%.cu=$(BUILD)/emu/%.o) \
            $(patsubst %.cc,$(BUILD)/%.o,$(wildcard tests/cuda_emu/*.cc))

ENGINE_SRCS := $(filter-out engine/cli/%,$(wildcard engine/*/*.c))
ENGINE_OBJS := $(ENGINE_SRCS:%.c=$(BUILD)/%.o) \
               $(patsubst %.cc,$(BUILD)/%.o,$(filter-out engine/cli/%,$(wildcard engine/*/*.cc)))
ENGINE_LIB  := $(BUILD)/libnlpd_engine.a

# The daemon: every server/*.c but main.c goes into a library the tests link.
SERVER_PKGS   := libmicrohttpd libuv libcrypto
SERVER_CFLAGS := $(shell pkg-config --cflags $(SERVER_PKGS) 2>/dev/null)
SERVER_LIBS   := $(shell pkg-config --libs $(SERVER_PKGS) 2>/dev/null)
SERVER_SRCS   := $(filter-out server/main.c,$(wildcard server/*.c))
SERVER_OBJS   := $(SERVER_SRCS:%.c=$(BUILD)/%.o)
SERVER_LIB    := $(BUILD)/libnlpd_server.a

# nlpd-train: every trainer/*.c but main.c goes into a library the tests link.
TRAINER_SRCS := $(filter-out trainer/main.c,$(wildcard trainer/*.c))
TRAINER_OBJS := $(TRAINER_SRCS:%.c=$(BUILD)/%.o)
TRAINER_LIB  := $(BUILD)/libnlpd_trainer.a

TEST_SRCS := $(wildcard tests/unit/*.c)
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/%.o)
# White-box engine tests: they include engine-internal headers (backend, kernels,
# tokenizer and model internals). Every other test sees only engine/include/.
ENGINE_TESTS := backend_cpu backend_ops checkpoint marian marian_tok repo safetensors seq2seq \
                tokenizer train_grad precision
ENGINE_TEST_OBJS := $(ENGINE_TESTS:%=$(BUILD)/tests/unit/test_%.o)

.PHONY: all deps ref-deps models test unit bench clean default-models run fuzz
all: $(BUILD)/nlpd-cli $(BUILD)/nlpd $(BUILD)/nlpd-train

deps:
	@scripts/install_deps.sh

ref-deps:
	@scripts/install_deps.sh --ref

models:
	@scripts/fetch_models.sh

# Default (server/ helpers, trainer/, bench/, public-API tests): the public API only.
$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PUBLIC_INC) -c $< -o $@

# The engine itself sees its whole tree; engine/cli/ (a tool) only the public API.
$(BUILD)/engine/%.o: engine/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ENGINE_INC) -c $< -o $@

$(BUILD)/engine/cli/%.o: engine/cli/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PUBLIC_INC) -c $< -o $@

$(BUILD)/engine/%.o: engine/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(ENGINE_TEST_OBJS): $(BUILD)/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ENGINE_INC) -c $< -o $@

# server/ (and its tests) may include only engine/include/ from the engine.
$(BUILD)/server/%.o: server/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PUBLIC_INC) -Iserver $(SERVER_CFLAGS) -c $< -o $@

# GET /openapi.json serves server/openapi.json, built in with .incbin.
$(BUILD)/server/handle_openapi.o: server/openapi.json

$(BUILD)/tests/unit/test_server_%.o: tests/unit/test_server_%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PUBLIC_INC) -Iserver $(SERVER_CFLAGS) -c $< -o $@

$(BUILD)/cuda/%.o: cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

$(BUILD)/emu/cuda/%.o: cuda/%.cu
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -x c++ -c $< -o $@

$(BUILD)/tests/cuda_emu/%.o: tests/cuda_emu/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -c $< -o $@

$(ENGINE_LIB): $(ENGINE_OBJS) $(CU_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/nlpd-cli: $(BUILD)/engine/cli/nlpd_cli.o $(ENGINE_LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(SERVER_LIB): $(SERVER_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/nlpd: $(BUILD)/server/main.o $(SERVER_LIB) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) $^ $(SERVER_LIBS) $(LDLIBS) -o $@

$(TRAINER_LIB): $(TRAINER_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/nlpd-train: $(BUILD)/trainer/main.o $(TRAINER_LIB) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# Benchmark drivers (bench/bench_*.c), built by the bench/ scripts: make build/bench-encoder.
# `make test` builds them too, so that a driver that no longer compiles is a failure.
BENCH_BINS = $(patsubst bench/bench_%.c,bench-%,$(wildcard bench/bench_*.c))
$(BUILD)/bench-%: $(BUILD)/bench/bench_%.o $(ENGINE_LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# Trainer tests see trainer/*.h.
$(BUILD)/tests/unit/test_train_%.o: CFLAGS += -Itrainer

# The default sentiment and intent models (models/sentiment, models/intents), trained
# by nlpd-train from all-MiniLM-L6-v2 when absent (scripts/train_default_models.sh).
default-models: $(BUILD)/nlpd-train
	@NLPD_TRAIN=$(BUILD)/nlpd-train scripts/train_default_models.sh

$(BUILD)/test_unit: $(TEST_OBJS) $(EMU_OBJS) $(if $(SERVER_SRCS),$(SERVER_LIB)) $(TRAINER_LIB) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) $^ $(SERVER_LIBS) $(LDLIBS) -lcmocka -lcrypto -o $@

unit: $(BUILD)/test_unit

# Quick start: install what is needed, fetch the model, build, and serve
# config/nlpd.json on 127.0.0.1:8080 (Ctrl-C drains and exits). The build runs in a
# sub-make so that pkg-config sees the packages deps just installed.
# The daemon serves at once; a sidecar nlpd-train publishes head-only sentiment and
# intents versions within about a minute and the full fine-tunes later (scripts/run.sh).
run: deps models
	@$(MAKE) --no-print-directory $(BUILD)/nlpd $(BUILD)/nlpd-train
	@BUILD=$(BUILD) scripts/run.sh

# Tests run in a sanitizer build of their own (build/san).
test: deps models
	@$(MAKE) --no-print-directory SAN=1 BUILD=build/san build/san/test_unit build/san/nlpd-cli \
		build/san/nlpd-train build/san/nlpd $(addprefix build/san/,$(BENCH_BINS))
	@scripts/run_tests.sh build/san

# Every fuzz target (tests/fuzz/fuzz_*.c) for FUZZ_SECONDS each, one after another, under
# clang with ASan/UBSan; prints execs, coverage and slow units per target. `make test`
# runs the same script briefly (NLPD_FUZZ_SECONDS, 12 s a target). FUZZ_TARGETS: a subset.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?=
fuzz:
	@tests/fuzz/run.sh build/san $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# All benchmarks, one after another (each prints ratios against its peers).
bench: all
	@bench/encoder
	@bench/http
	@bench/translate
	@bench/train

clean:
	rm -rf $(BUILD) build

-include $(TRAINER_OBJS:.o=.d) $(BUILD)/trainer/main.d $(CU_OBJS:.o=.d) $(EMU_OBJS:.o=.d)
-include $(ENGINE_OBJS:.o=.d) $(SERVER_OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(BUILD)/engine/cli/nlpd_cli.d \
	$(BUILD)/server/main.d
