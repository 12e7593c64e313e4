// iot-config: its feature lands with its own issue; until then it says so instead of pretending.
#include <cstdio>

#include "applet.hpp"

void iot_config_help() {
    printf("Usage: iot-config [OPTIONS]\n\n"
           "iot-config is not available in this build yet: it arrives with its own feature.\n");
}

int iot_config_main(int, char**) { return iot::not_available("iot-config"); }
