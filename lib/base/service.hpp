// Talking to the service manager without libsystemd: the sd_notify protocol is one datagram on the
// Unix socket named by $NOTIFY_SOCKET ("READY=1", "STATUS=...", "WATCHDOG=1", "STOPPING=1").
// Everything here is a no-op when the variable is not set.
#pragma once
#include <cstdint>
#include <string>

namespace iot::service {

// Send `state` to the service manager; false if there is none or the send failed.
bool notify(const std::string& state);
// The watchdog interval the manager expects pings within (WATCHDOG_USEC, checked against
// WATCHDOG_PID), in milliseconds; 0 when there is no watchdog.
int64_t watchdog_ms();

}  // namespace iot::service
