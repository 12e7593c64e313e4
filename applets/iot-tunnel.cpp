// iot-tunnel: its feature lands with its own issue; until then it says so instead of pretending.
#include <cstdio>

#include "applet.hpp"

void iot_tunnel_help() {
    printf("Usage: iot-tunnel [OPTIONS]\n\n"
           "iot-tunnel is not available in this build yet: it arrives with its own feature.\n");
}

int iot_tunnel_main(int, char**) { return iot::not_available("iot-tunnel"); }
