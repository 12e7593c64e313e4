#include "config/config.hpp"
#include "fs/fs.hpp"
#include "mqtt/client.hpp"

namespace iot::mqtt {

Options options_from_config(const config::Config& cfg) {
    Options o;
    o.host = cfg.str("endpoint");
    o.port = static_cast<int>(cfg.num("port"));
    o.client_id = cfg.str("thing-name");
    // A configured root CA that does not exist falls back to the system store (Device Client
    // behaviour); check_permissions warns about it.
    std::string ca = cfg.path("root-ca");
    o.ca_file = !ca.empty() && fs::exists(ca) ? ca : "";
    o.cert_file = cfg.path("cert");
    o.key_file = cfg.path("key");
    o.keepalive_s = static_cast<int>(cfg.num("mqtt.keepalive"));
    o.clean_session = cfg.flag("clean-session");
    o.reconnect_min_ms = cfg.num("mqtt.reconnect-min") * 1000;
    o.reconnect_max_ms = cfg.num("mqtt.reconnect-max") * 1000;
    o.connect_timeout_ms = cfg.num("mqtt.connect-timeout") * 1000;
    return o;
}

}  // namespace iot::mqtt
