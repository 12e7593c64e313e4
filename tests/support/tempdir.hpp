// A scratch directory for one test, removed with everything in it when the test ends.
#pragma once
#include <stdlib.h>

#include <cstdlib>
#include <string>

namespace testsupport {

struct TempDir {
    std::string path;
    explicit TempDir(const std::string& prefix = "iottest") {
        std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
        path = mkdtemp(tmpl.data()) ? tmpl : std::string();
    }
    ~TempDir() {
        if (!path.empty()) std::system(("rm -rf '" + path + "'").c_str());
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

}  // namespace testsupport
