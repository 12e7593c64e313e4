# The front door. Everything real happens in CMake (CMakeLists.txt) and toolchains/deps.sh.
#   make          build build/iotbox (fully static, stripped), installing build packages if needed
#   make check    build and run every test (unit, black-box, broker, chroot); leaves nothing running
#   make demo     start a local TLS broker and the fakecloud, run iotd against them, show it working
#   make size     stripped size and what each library contributes
#   make size-table   sizes for every architecture, both OpenSSLs and the EXCLUDE_* subsets (long)
#   OPENSSL=trimmed   link an OpenSSL built from Debian's source with only what iotbox uses
#                 (toolchains/openssl.sh), in build-trim/: make OPENSSL=trimmed [check|size]
#   make install  DESTDIR=... PREFIX=/usr: the binary and its applet links
#   make bench    build and run the benchmarks
OPENSSL ?= debian
ifeq ($(OPENSSL),trimmed)
BUILD   ?= build-trim
else ifeq ($(OPENSSL),debian)
BUILD   ?= build
else
$(error OPENSSL must be debian (Debian's libssl-dev) or trimmed (toolchains/openssl.sh), not '$(OPENSSL)')
endif
JOBS    ?= 2
PREFIX  ?= /usr
CMAKE_FLAGS ?=
TRIPLET := $(shell gcc -dumpmachine 2>/dev/null)
MAKEFLAGS += --no-print-directory

BUILD_PACKAGES := build-essential cmake libssl-dev zlib1g-dev libprotobuf-dev protobuf-compiler dpkg-dev xz-utils file
TEST_PACKAGES  := libgtest-dev libgmock-dev libbenchmark-dev mosquitto openssl python3 python3-paho-mqtt \
                  python3-cryptography python3-pytest python3-cbor2 procps busybox openssh-server openssh-client \
                  tmux curl wget

.PHONY: all packages test-packages deps configure check demo size size-table install bench format clean distclean

all: configure
	@cmake --build $(BUILD) -j$(JOBS) --target iotbox
	@printf '$(BUILD)/iotbox: %s bytes, %s, %s\n' "$$(stat -c %s $(BUILD)/iotbox)" \
	  "$$(file -b $(BUILD)/iotbox | grep -o 'statically linked\|dynamically linked')" \
	  "$$(file -b $(BUILD)/iotbox | grep -o 'stripped\|not stripped' | head -n 1)"

# Install what is missing, as root; otherwise say exactly what to run.
packages:
	@toolchains/packages.sh $(BUILD_PACKAGES)
test-packages:
	@toolchains/packages.sh $(BUILD_PACKAGES) $(TEST_PACKAGES)

# A configured tree keeps the OpenSSL and the target it was configured with: its deps must match
# it. `make install BUILD=build-armhf-trim` (tests/applets/test_initscripts.py does that for a
# cross build) builds nothing for the host and changes nothing in the tree.
TREE_CACHE   := $(wildcard $(BUILD)/CMakeCache.txt)
TREE_OPENSSL := $(if $(TREE_CACHE),$(if $(shell sed -n 's/^IOT_OPENSSL_ROOT:PATH=\(.\)/\1/p' $(TREE_CACHE)),trimmed,debian),$(OPENSSL))
TREE_TRIPLET := $(if $(TREE_CACHE),$(shell sed -n 's/^IOT_TRIPLET:STRING=//p' $(TREE_CACHE)))
ifneq ($(TREE_OPENSSL),$(OPENSSL))
ifeq ($(origin OPENSSL),command line)
$(warning $(BUILD) is configured with the $(TREE_OPENSSL) OpenSSL; OPENSSL=$(OPENSSL) needs another BUILD (or make distclean))
endif
endif
deps: packages
	@if [ -z "$(TREE_TRIPLET)" ] || [ "$(TREE_TRIPLET)" = "$(TRIPLET)" ]; then \
	  IOT_OPENSSL=$(TREE_OPENSSL) toolchains/deps.sh $(TRIPLET) $(abspath $(BUILD))/deps; fi

OPENSSL_ROOT := $(if $(filter trimmed,$(OPENSSL)),$(abspath $(BUILD))/deps/$(TRIPLET)/openssl)
configure: deps
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DIOT_DEPS_PREFIX=$(abspath $(BUILD))/deps/$(TRIPLET) \
	  -DIOT_OPENSSL_ROOT=$(OPENSSL_ROOT) $(CMAKE_FLAGS) >/dev/null

check: test-packages
	@$(MAKE) --no-print-directory all
	@cmake --build $(BUILD) -j$(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS); rc=$$?; \
	  /usr/bin/python3 ../tests/testbed/testbed.py reap $(CURDIR)/$(BUILD)/testbed >/dev/null 2>&1; exit $$rc

demo: test-packages
	@$(MAKE) --no-print-directory all
	@tests/demo.sh $(BUILD)

size: all
	@/usr/bin/python3 toolchains/size.py $(BUILD)/iotbox $(BUILD)/iotbox.map

# Every architecture with Debian's and the trimmed OpenSSL, and the EXCLUDE_* subsets, each in its
# own tree under build-size/ (left for the next run); the table goes to build-size/sizes.md.
# About 20 minutes the first time on 2 cores; SIZE_ARCHS=x86_64 limits the architectures.
SIZE_ARCHS ?= x86_64 aarch64 armhf mipsel
size-table:
	@/usr/bin/python3 toolchains/size.py --table --archs '$(SIZE_ARCHS)' --jobs $(JOBS) --out build-size

# INIT=systemd|sysvinit|openrc|none picks the service file installed with the binary.
INIT ?= systemd
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/iotbox $(DESTDIR)$(PREFIX)/sbin/iotbox
	ln -sf iotbox $(DESTDIR)$(PREFIX)/sbin/iotd
	for a in iot-provision iot-job-run iot-metrics iot-tunnel iot-config; do ln -sf ../sbin/iotbox $(DESTDIR)$(PREFIX)/bin/$$a; done
	install -d -m 0755 $(DESTDIR)/etc/iotbox
	install -m 0640 configs/iotbox.conf.example $(DESTDIR)/etc/iotbox/iotbox.conf.example
	install -d -m 0700 $(DESTDIR)/etc/iotbox/jobs
	install -m 0700 configs/handlers/*.sh $(DESTDIR)/etc/iotbox/jobs/
	@case "$(INIT)" in \
	  systemd) install -D -m 0644 initscripts/iotd.service $(DESTDIR)/lib/systemd/system/iotd.service ;; \
	  sysvinit) install -D -m 0755 initscripts/iotd.init $(DESTDIR)/etc/init.d/iotd ;; \
	  openrc) install -D -m 0755 initscripts/iotd.openrc $(DESTDIR)/etc/init.d/iotd ;; \
	  none) ;; \
	  *) echo "INIT must be systemd, sysvinit, openrc or none" >&2; exit 2 ;; \
	esac
	@sed -i 's|/usr/sbin/iotd|$(PREFIX)/sbin/iotd|' $$(ls $(DESTDIR)/lib/systemd/system/iotd.service $(DESTDIR)/etc/init.d/iotd 2>/dev/null) 2>/dev/null || true

bench: test-packages configure
	@cmake -S . -B $(BUILD) -DIOT_BENCH=ON >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) --target benchmarks
	@$(BUILD)/bench/benchmarks
	@/usr/bin/python3 bench/iotd_footprint.py $(BUILD)/iotbox
	@/usr/bin/python3 bench/jobs_roundtrip.py $(BUILD)/iotbox
	@/usr/bin/python3 bench/tunnel_bench.py $(BUILD)/iotbox

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	@cmake --build $(BUILD) --target clean 2>/dev/null || true
distclean:
	rm -rf $(BUILD)
