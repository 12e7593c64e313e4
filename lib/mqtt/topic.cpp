#include "mqtt/topic.hpp"

#include "base/time.hpp"

namespace iot::mqtt {

bool topic_matches(std::string_view filter, std::string_view topic) {
    if (!topic.empty() && topic[0] == '$' && !filter.empty() && (filter[0] == '+' || filter[0] == '#'))
        return false;
    size_t f = 0, t = 0;
    for (;;) {
        size_t fe = filter.find('/', f);
        std::string_view flevel = filter.substr(f, fe == std::string_view::npos ? std::string_view::npos : fe - f);
        if (flevel == "#") return true;
        if (t > topic.size()) return false;  // topic exhausted but filter continues
        size_t te = topic.find('/', t);
        std::string_view tlevel = topic.substr(t, te == std::string_view::npos ? std::string_view::npos : te - t);
        if (flevel != "+" && flevel != tlevel) return false;
        bool fend = fe == std::string_view::npos, tend = te == std::string_view::npos;
        if (fend && tend) return true;
        if (fend) return false;
        f = fe + 1;
        if (tend) {
            // "a/#" matches "a": only if what remains of the filter is exactly "#".
            return filter.substr(f) == "#";
        }
        t = te + 1;
    }
}

int64_t Backoff::ceiling() const {
    int64_t c = min_;
    for (int i = 0; i < attempt_ && c < max_; ++i) c *= 2;
    return c > max_ ? max_ : c;
}

int64_t Backoff::next() {
    int64_t hi = ceiling();
    ++attempt_;
    return static_cast<int64_t>(random_between(static_cast<uint64_t>(min_), static_cast<uint64_t>(hi)));
}

}  // namespace iot::mqtt
