// iotbox: one static executable, many programs. Dispatch on basename(argv[0]) (a symlink or hard
// link named after the applet) or, when called as iotbox, on the first argument.
#include <cjson/cJSON.h>
#include <google/protobuf/stubs/common.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>

#include "applet.hpp"
#include "base/strings.hpp"
#include "mqtt/client.hpp"

namespace {

struct Applet {
    const char* name;
    int (*main)(int, char**);
    void (*help)();
    const char* dir;
    const char* summary;
};

const Applet kApplets[] = {
#define APPLET(name, id, dir, summary) {name, id##_main, id##_help, dir, summary},
#include "applets.def"
#undef APPLET
};

const Applet* find(const char* name) {
    for (const Applet& a : kApplets)
        if (strcmp(a.name, name) == 0) return &a;
    return nullptr;
}

const char* base_name(const char* path) {
    const char* slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

void list(bool full) {
    for (const Applet& a : kApplets) {
        if (full)
            printf("%s/%s\n", a.dir, a.name);
        else
            printf("%s\n", a.name);
    }
}

void usage() {
    printf("iotbox %s: the AWS IoT device agent in one static binary\n\n"
           "Usage: iotbox APPLET [ARGS...]   or   APPLET [ARGS...] through a link named APPLET\n"
           "       iotbox --list | --list-full | --install [-s] DIR | --help [APPLET] | --version\n\n"
           "Applets:\n",
           IOTBOX_VERSION);
    for (const Applet& a : kApplets) printf("  %-14s %s\n", a.name, a.summary);
    printf("\nExit codes: 0 success, 1 the operation failed, 2 usage or configuration error, 127 unknown applet.\n");
}

// Links for every applet in `dir`: hard links by default (no dangling links if the binary moves
// within the file system), symlinks with -s. An existing file that is not already us is left alone.
int install(const char* dir, bool symbolic) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "iotbox: --install: cannot find my own path (is /proc mounted?): %s\n", strerror(errno));
        return iot::kExitFailed;
    }
    self[n] = '\0';
    struct stat me;
    if (stat(self, &me) != 0) return iot::fail("iotbox", iot::kExitFailed, "--install: %s: %s", self, strerror(errno));
    int rc = iot::kExitOk;
    for (const Applet& a : kApplets) {
        std::string path = std::string(dir) + "/" + a.name;
        struct stat st;
        if (lstat(path.c_str(), &st) == 0) {
            struct stat target;
            bool is_us = stat(path.c_str(), &target) == 0 && target.st_ino == me.st_ino && target.st_dev == me.st_dev;
            if (!is_us) {
                fprintf(stderr, "iotbox: --install: %s exists and is not iotbox; left alone\n", path.c_str());
                rc = iot::kExitFailed;
                continue;
            }
            unlink(path.c_str());
        }
        int r = symbolic ? symlink(self, path.c_str()) : link(self, path.c_str());
        if (r != 0) {
            fprintf(stderr, "iotbox: --install: cannot create %s: %s%s\n", path.c_str(), strerror(errno),
                    !symbolic && errno == EXDEV ? " (another file system: use --install -s)" : "");
            rc = iot::kExitFailed;
        }
    }
    return rc;
}

int run_applet(const Applet& a, int argc, char** argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        a.help();
        return iot::kExitOk;
    }
    return a.main(argc, argv);
}

}  // namespace

namespace iot {

int fail(const char* applet, int code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vformat(fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", applet, msg.c_str());
    return code;
}

bool is_option(const char* arg, const char* name) {
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

const char* option_value(int argc, char** argv, int& i, const char* name) {
    size_t n = strlen(name);
    if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
    return i + 1 < argc ? argv[++i] : nullptr;
}

void print_version() {
    printf("iotbox %s\napplets:", IOTBOX_VERSION);
    for (const Applet& a : kApplets) printf(" %s", a.name);
    int pb = GOOGLE_PROTOBUF_VERSION;
    printf("\nOpenSSL %s\nlibmosquitto %s\ncJSON %s\nprotobuf-lite %d.%d.%d\nzlib %s\n",
           OpenSSL_version(OPENSSL_VERSION_STRING), iot::mqtt::library_version().c_str(), cJSON_Version(),
           pb / 1000000, pb / 1000 % 1000, pb % 1000, zlibVersion());
}

}  // namespace iot

int main(int argc, char** argv) {
    const char* name = base_name(argc > 0 ? argv[0] : "iotbox");
    if (const Applet* a = find(name)) return run_applet(*a, argc, argv);
    if (strcmp(name, "iotbox") != 0 && strncmp(name, "iotbox", 6) != 0) {
        fprintf(stderr, "iotbox: applet not found: %s\n", name);
        return iot::kExitUnknownApplet;
    }
    if (argc < 2 || strcmp(argv[1], "--list") == 0) {
        if (argc < 2) {
            usage();
            return iot::kExitOk;
        }
        list(false);
        return iot::kExitOk;
    }
    const char* cmd = argv[1];
    if (strcmp(cmd, "--list-full") == 0) {
        list(true);
        return iot::kExitOk;
    }
    if (strcmp(cmd, "--version") == 0) {
        iot::print_version();
        return iot::kExitOk;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        if (argc < 3) {
            usage();
            return iot::kExitOk;
        }
        const Applet* a = find(argv[2]);
        if (!a) return iot::fail("iotbox", iot::kExitUnknownApplet, "applet not found: %s", argv[2]);
        a->help();
        return iot::kExitOk;
    }
    if (strcmp(cmd, "--install") == 0) {
        bool symbolic = argc > 2 && strcmp(argv[2], "-s") == 0;
        int dir_index = symbolic ? 3 : 2;
        if (argc != dir_index + 1) return iot::fail("iotbox", iot::kExitUsage, "usage: iotbox --install [-s] DIR");
        return install(argv[dir_index], symbolic);
    }
    if (cmd[0] == '-') return iot::fail("iotbox", iot::kExitUsage, "unknown option %s (try iotbox --help)", cmd);
    const Applet* a = find(cmd);
    if (!a) return iot::fail("iotbox", iot::kExitUnknownApplet, "applet not found: %s", cmd);
    // Exactly as if started through a link named `cmd`: the applet sees its own name in argv[0].
    return run_applet(*a, argc - 1, argv + 1);
}
