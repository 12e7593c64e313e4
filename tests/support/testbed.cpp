// See testbed.hpp. Plain POSIX: fork/exec for the Python tools, an AF_UNIX
// socket for the fakecloud's control interface, cJSON for the JSON.
#include "testbed.hpp"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <stdexcept>

#ifndef IOT_SOURCE_DIR
#error "compile tests/support/testbed.cpp with -DIOT_SOURCE_DIR=\"/abs/path/to/source\""
#endif

namespace testsupport {
namespace {

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error("testbed: " + what); }

std::string errno_text() { return strerror(errno); }

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = getenv(name);
    return v && *v ? std::string(v) : fallback;
}

std::string python() { return env_or("IOT_PYTHON", "/usr/bin/python3"); }

std::string source_path(const char* rel) { return std::string(IOT_SOURCE_DIR) + "/" + rel; }

double now_s() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

void sleep_s(double s) {
    timespec ts{static_cast<time_t>(s), static_cast<long>((s - static_cast<time_t>(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void mkdir_p(const std::string& path) {
    std::string cur;
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        cur = path.substr(0, pos);
        if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
            fail("mkdir " + cur + ": " + errno_text());
    }
}

std::string read_file(const std::string& path) {
    std::string data;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return data;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
    close(fd);
    return data;
}

std::string tail(const std::string& text, size_t max = 2000) {
    return text.size() <= max ? text : "..." + text.substr(text.size() - max);
}

// Runs argv, returns its exit status and its stdout+stderr together.
int run_capture(const std::vector<std::string>& args, std::string& output) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) fail("pipe: " + errno_text());
    pid_t pid = fork();
    if (pid < 0) fail("fork: " + errno_text());
    if (pid == 0) {  // only async-signal-safe calls from here on
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        execv(argv[0], argv.data());
        _exit(127);
    }
    close(fds[1]);
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        output.append(buf, static_cast<size_t>(n));
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

using Json = std::unique_ptr<cJSON, decltype(&cJSON_Delete)>;

Json parse(const std::string& text) {
    Json j(cJSON_Parse(text.c_str()), cJSON_Delete);
    if (!j) fail("not JSON: " + tail(text, 500));
    return j;
}

std::string string_field(const cJSON* obj, const char* key, const std::string& context) {
    const cJSON* v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v)) fail(context + ": no string \"" + key + "\"");
    return v->valuestring;
}

int int_field(const cJSON* obj, const char* key, const std::string& context) {
    const cJSON* v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v)) fail(context + ": no number \"" + key + "\"");
    return v->valueint;
}

std::string print(const cJSON* obj) {
    char* s = cJSON_PrintUnformatted(obj);
    if (!s) fail("cJSON_PrintUnformatted failed");
    std::string out(s);
    cJSON_free(s);
    return out;
}

Json request(const char* cmd) {
    Json j(cJSON_CreateObject(), cJSON_Delete);
    cJSON_AddStringToObject(j.get(), "cmd", cmd);
    return j;
}

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
    remove(path);
    return 0;
}

}  // namespace

// ------------------------------------------------------------------ Testbed

std::string Testbed::run(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{python(), source_path("tests/testbed/testbed.py")};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string output;
    int rc = run_capture(argv, output);
    if (rc != 0) {
        std::string cmd;
        for (const auto& a : args) cmd += " " + a;
        fail("testbed.py" + cmd + " exited " + std::to_string(rc) + ": " + tail(output));
    }
    return output;
}

Testbed::Testbed(std::string name) {
    static std::atomic<int> counter{0};
    std::string root = env_or("IOT_TESTBED_ROOT", source_path("build/testbed"));
    mkdir_p(root);
    dir_ = root + "/" + name + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
    run({"up", dir_});

    std::string path = dir_ + "/testbed.json";
    try {
        Json info = parse(read_file(path));
        host_ = string_field(info.get(), "host", path);
        port_ = int_field(info.get(), "port", path);
        mismatch_port_ = int_field(info.get(), "mismatch_port", path);
        ca_ = string_field(info.get(), "ca", path);
        ca_key_ = string_field(info.get(), "ca_key", path);
        fakecloud_cert_ = string_field(info.get(), "fakecloud_cert", path);
        fakecloud_key_ = string_field(info.get(), "fakecloud_key", path);
    } catch (const std::runtime_error&) {
        std::string ignored;
        run_capture({python(), source_path("tests/testbed/testbed.py"), "down", dir_}, ignored);
        throw;
    }
}

Testbed::~Testbed() {
    try {
        run({"down", dir_});
    } catch (const std::exception&) {
        // a destructor must not throw; `testbed.py reap` at the end of make check catches the rest
        return;
    }
    if (env_or("IOT_TESTBED_KEEP", "").empty())
        nftw(dir_.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

Testbed::Identity Testbed::thing(const std::string& name, const ThingOptions& options) {
    std::vector<std::string> args{"thing", dir_, name, "--days", std::to_string(options.days)};
    if (options.expired) args.push_back("--expired");
    if (options.untrusted) args.push_back("--untrusted");
    std::string out = run(args);
    Json j = parse(out);
    return {string_field(j.get(), "cert", "testbed.py thing"), string_field(j.get(), "key", "testbed.py thing")};
}

void Testbed::stop() { run({"stop", dir_}); }

void Testbed::start() { run({"start", dir_}); }

void Testbed::restart(double down_seconds) {
    run({"restart", dir_, "--down", std::to_string(down_seconds)});
}

bool Testbed::running() const {
    std::vector<std::string> argv{python(), source_path("tests/testbed/testbed.py"), "status", dir_};
    std::string output;
    return run_capture(argv, output) == 0;
}

// ------------------------------------------------------------------ FakeCloud

bool response_ok(const std::string& response_line) {
    Json j(cJSON_Parse(response_line.c_str()), cJSON_Delete);
    return j && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j.get(), "ok"));
}

FakeCloud::FakeCloud(const Testbed& testbed) : dir_(testbed.dir()), socket_(testbed.dir() + "/fakecloud.sock") {
    if (socket_.size() >= sizeof(sockaddr_un{}.sun_path))
        fail(socket_ + ": path too long for a Unix socket (set IOT_TESTBED_ROOT to a shorter directory)");
    std::string out_path = dir_ + "/fakecloud.out";
    std::vector<std::string> args{python(), source_path("tests/fakecloud/fakecloud.py"), "--testbed", dir_};
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) fail(out_path + ": " + errno_text());
    pid_ = fork();
    if (pid_ < 0) {
        close(out);
        fail("fork: " + errno_text());
    }
    if (pid_ == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(out, 1);
        dup2(out, 2);
        execv(argv[0], argv.data());
        _exit(127);
    }
    close(out);

    double deadline = now_s() + 15;
    for (;;) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            fail("fakecloud.py exited at start: " + tail(read_file(out_path)));
        }
        if (access(socket_.c_str(), F_OK) == 0) {
            try {
                std::string resp = command("{\"cmd\":\"ping\"}", 5);
                Json j = parse(resp);
                if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j.get(), "connected"))) break;
            } catch (const std::runtime_error&) {
                // not listening yet
            }
        }
        if (now_s() > deadline) {
            terminate();
            fail("fakecloud.py did not connect to the broker within 15 s: " + tail(read_file(out_path)));
        }
        sleep_s(0.05);
    }
}

FakeCloud::~FakeCloud() { terminate(); }

void FakeCloud::terminate() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    double deadline = now_s() + 5;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid_, &status, WNOHANG);
        if (r == pid_ || (r < 0 && errno != EINTR)) break;
        if (now_s() > deadline) {
            kill(pid_, SIGKILL);
            waitpid(pid_, &status, 0);
            break;
        }
        sleep_s(0.02);
    }
    pid_ = -1;
}

std::string FakeCloud::command(const std::string& json_line, double timeout_s) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket: " + errno_text());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, socket_.c_str(), socket_.size() + 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        std::string why = errno_text();
        close(fd);
        fail("connect " + socket_ + ": " + why);
    }
    std::string line = json_line;
    if (line.empty() || line.back() != '\n') line += '\n';
    size_t sent = 0;
    while (sent < line.size()) {
        ssize_t n = send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            std::string why = errno_text();
            close(fd);
            fail("send to fakecloud: " + why);
        }
        sent += static_cast<size_t>(n);
    }
    std::string resp;
    double deadline = now_s() + timeout_s;
    while (resp.empty() || resp.back() != '\n') {
        double left = deadline - now_s();
        pollfd p{fd, POLLIN, 0};
        int r = left > 0 ? poll(&p, 1, static_cast<int>(left * 1000) + 1) : 0;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            close(fd);
            fail("no answer from fakecloud to " + json_line);
        }
        char buf[65536];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            close(fd);
            fail("fakecloud closed the control connection during " + json_line);
        }
        resp.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    resp.pop_back();
    return resp;
}

Testbed::Identity FakeCloud::create_thing(const std::string& name) {
    Json req = request("create_thing");
    cJSON_AddStringToObject(req.get(), "name", name.c_str());
    std::string resp = command(print(req.get()));
    if (!response_ok(resp)) fail("create_thing " + name + ": " + resp);
    Json j = parse(resp);
    return {string_field(j.get(), "cert", "create_thing"), string_field(j.get(), "key", "create_thing")};
}

void FakeCloud::publish(const std::string& topic, const std::string& payload, int qos) {
    Json req = request("publish");
    cJSON_AddStringToObject(req.get(), "topic", topic.c_str());
    cJSON_AddStringToObject(req.get(), "payload", payload.c_str());
    cJSON_AddNumberToObject(req.get(), "qos", qos);
    std::string resp = command(print(req.get()));
    if (!response_ok(resp)) fail("publish " + topic + ": " + resp);
}

bool FakeCloud::wait_for(const std::string& topic_filter, double timeout_s, const std::string& thing, int after) {
    Json req = request("wait");
    cJSON_AddStringToObject(req.get(), "topic", topic_filter.c_str());
    cJSON_AddNumberToObject(req.get(), "timeout", timeout_s);
    cJSON_AddNumberToObject(req.get(), "after", after);
    if (!thing.empty()) cJSON_AddStringToObject(req.get(), "thing", thing.c_str());
    std::string resp = command(print(req.get()), timeout_s + 30);
    if (response_ok(resp)) return true;
    Json j = parse(resp);
    const cJSON* err = cJSON_GetObjectItemCaseSensitive(j.get(), "error");
    if (cJSON_IsString(err) && std::string(err->valuestring) == "timeout") return false;
    fail("wait " + topic_filter + ": " + resp);
}

std::string FakeCloud::received(const std::string& thing, const std::string& topic_filter) {
    Json req = request("received");
    if (!thing.empty()) cJSON_AddStringToObject(req.get(), "thing", thing.c_str());
    if (!topic_filter.empty()) cJSON_AddStringToObject(req.get(), "topic", topic_filter.c_str());
    std::string resp = command(print(req.get()));
    if (!response_ok(resp)) fail("received: " + resp);
    return resp;
}

std::string FakeCloud::log() {
    std::string resp = command("{\"cmd\":\"log\"}");
    if (!response_ok(resp)) fail("log: " + resp);
    return resp;
}

void FakeCloud::clear_log() {
    std::string resp = command("{\"cmd\":\"clear_log\"}");
    if (!response_ok(resp)) fail("clear_log: " + resp);
}

}  // namespace testsupport
