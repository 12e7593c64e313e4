#include "jobs/store.hpp"

#include <cstdio>
#include <cstdlib>

#include "base/strings.hpp"
#include "base/time.hpp"
#include "fs/fs.hpp"
#include "json/json.hpp"

namespace iot::jobs {
namespace {
const size_t kDoneMemory = 200;

cJSON* update_to_json(const StatusUpdate& u) {
    cJSON* o = cJSON_CreateObject();
    json::set(o, "jobId", u.job_id);
    json::set(o, "executionNumber", u.execution_number);
    json::set(o, "status", u.status);
    if (u.expected_version) json::set(o, "expectedVersion", u.expected_version);
    cJSON* d = cJSON_AddArrayToObject(o, "statusDetails");
    for (const auto& [k, v] : u.details) {
        cJSON* pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(k.c_str()));
        cJSON_AddItemToArray(pair, cJSON_CreateString(v.c_str()));
        cJSON_AddItemToArray(d, pair);
    }
    return o;
}

StatusUpdate update_from_json(const cJSON* o) {
    StatusUpdate u;
    u.job_id = json::string_or(o, "jobId", "");
    u.execution_number = json::integer(o, "executionNumber").value_or(0);
    u.status = json::string_or(o, "status", "");
    u.expected_version = json::integer(o, "expectedVersion").value_or(0);
    const cJSON* pair = nullptr;
    cJSON_ArrayForEach(pair, json::get(o, "statusDetails")) {
        const cJSON* k = cJSON_GetArrayItem(pair, 0);
        const cJSON* v = cJSON_GetArrayItem(pair, 1);
        if (cJSON_IsString(k) && cJSON_IsString(v)) u.details.emplace_back(k->valuestring, v->valuestring);
    }
    return u;
}
}  // namespace

std::string boot_id() {
    // IOTBOX_BOOT_ID_FILE stands in for the kernel's file in tests (a "reboot" without one).
    const char* file = getenv("IOTBOX_BOOT_ID_FILE");
    auto id = fs::read_file(file && *file ? file : "/proc/sys/kernel/random/boot_id", 128);
    return id ? std::string(trim(*id)) : std::string();
}

Status JobStore::load() {
    outbox_.clear();
    current_.reset();
    done_.clear();
    if (!fs::exists(path_)) return {};
    auto text = fs::read_file(path_, 4 * 1024 * 1024);
    Result<json::Json> doc = text ? json::parse(*text) : Result<json::Json>(text.err());
    if (!doc) {
        std::string aside = format("%s.corrupt-%lld", path_.c_str(), static_cast<long long>(wall_ms() / 1000));
        std::rename(path_.c_str(), aside.c_str());
        return Error(format("%s: %s (moved to %s, starting with no job state)", path_.c_str(), doc.error().c_str(), aside.c_str()));
    }
    const cJSON* root = doc->get();
    const cJSON* item = nullptr;
    cJSON_ArrayForEach(item, json::get(root, "outbox")) outbox_.push_back(update_from_json(item));
    if (const cJSON* c = json::get(root, "current"); cJSON_IsObject(c)) {
        CurrentJob j;
        j.job_id = json::string_or(c, "jobId", "");
        j.execution_number = json::integer(c, "executionNumber").value_or(0);
        j.version = json::integer(c, "versionNumber").value_or(0);
        if (const cJSON* d = json::get(c, "jobDocument")) j.document = json::print(d);
        j.next_step = static_cast<size_t>(json::integer(c, "nextStep").value_or(0));
        j.reboot_boot_id = json::string_or(c, "rebootBootId", "");
        j.reboot_step = static_cast<size_t>(json::integer(c, "rebootStep").value_or(0));
        if (!j.job_id.empty()) current_ = j;
    }
    cJSON_ArrayForEach(item, json::get(root, "done")) {
        const cJSON* id = cJSON_GetArrayItem(item, 0);
        const cJSON* n = cJSON_GetArrayItem(item, 1);
        if (cJSON_IsString(id) && cJSON_IsNumber(n)) done_.emplace_back(id->valuestring, static_cast<long long>(n->valuedouble));
    }
    return {};
}

Status JobStore::save() {
    json::Json root = json::make_object();
    cJSON* out = cJSON_AddArrayToObject(root.get(), "outbox");
    for (const auto& u : outbox_) cJSON_AddItemToArray(out, update_to_json(u));
    if (current_) {
        cJSON* c = cJSON_AddObjectToObject(root.get(), "current");
        json::set(c, "jobId", current_->job_id);
        json::set(c, "executionNumber", current_->execution_number);
        json::set(c, "versionNumber", current_->version);
        if (auto d = json::parse(current_->document)) cJSON_AddItemToObject(c, "jobDocument", d->release());
        json::set(c, "nextStep", static_cast<long long>(current_->next_step));
        if (!current_->reboot_boot_id.empty()) {
            json::set(c, "rebootBootId", current_->reboot_boot_id);
            json::set(c, "rebootStep", static_cast<long long>(current_->reboot_step));
        }
    }
    cJSON* done = cJSON_AddArrayToObject(root.get(), "done");
    for (const auto& [id, n] : done_) {
        cJSON* pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(id.c_str()));
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(static_cast<double>(n)));
        cJSON_AddItemToArray(done, pair);
    }
    // Job documents and outputs can say things about the device: private.
    return fs::write_atomic(path_, json::print(root.get(), true), 0600);
}

bool JobStore::is_done(const std::string& job_id, long long execution_number) const {
    for (const auto& [id, n] : done_)
        if (id == job_id && n == execution_number) return true;
    return false;
}

void JobStore::remember_done(const std::string& job_id, long long execution_number) {
    if (is_done(job_id, execution_number)) return;
    done_.emplace_back(job_id, execution_number);
    while (done_.size() > kDoneMemory) done_.pop_front();
}

Status JobStore::set_current(const CurrentJob& job) {
    current_ = job;
    return save();
}

Status JobStore::finish_current(const std::optional<StatusUpdate>& final_status) {
    if (current_) remember_done(current_->job_id, current_->execution_number);
    if (final_status) outbox_.push_back(*final_status);
    current_.reset();
    return save();
}

Status JobStore::reject(const StatusUpdate& status) {
    remember_done(status.job_id, status.execution_number);
    outbox_.push_back(status);
    return save();
}

Status JobStore::pop_outbox() {
    if (!outbox_.empty()) outbox_.pop_front();
    return save();
}

Status JobStore::update_outbox_front(const StatusUpdate& status) {
    if (outbox_.empty()) return {};
    outbox_.front() = status;
    return save();
}

}  // namespace iot::jobs
