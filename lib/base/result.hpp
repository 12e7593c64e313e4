// Result<T>: a value or an error message, for every fallible operation in lib/. Errors are
// strings meant for a person ("open /etc/iotbox/iotbox.conf: No such file or directory"); callers
// add context on the way up with Error::wrap.
#pragma once
#include <optional>
#include <string>
#include <utility>

namespace iot {

struct Error {
    std::string message;
    explicit Error(std::string m) : message(std::move(m)) {}
    // "what: message" — prefix the context of the caller.
    Error wrap(const std::string& what) const { return Error(what + ": " + message); }
};

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : value_(std::move(value)) {}
    Result(Error error) : error_(std::move(error.message)) {}
    explicit operator bool() const { return value_.has_value(); }
    bool ok() const { return value_.has_value(); }
    T& operator*() { return *value_; }
    const T& operator*() const { return *value_; }
    T* operator->() { return &*value_; }
    const T* operator->() const { return &*value_; }
    T take() { return std::move(*value_); }
    const std::string& error() const { return error_; }
    Error err() const { return Error(error_); }

private:
    std::optional<T> value_;
    std::string error_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : failed_(true), error_(std::move(error.message)) {}
    explicit operator bool() const { return !failed_; }
    bool ok() const { return !failed_; }
    const std::string& error() const { return error_; }
    Error err() const { return Error(error_); }

private:
    bool failed_ = false;
    std::string error_;
};

using Status = Result<void>;

}  // namespace iot
