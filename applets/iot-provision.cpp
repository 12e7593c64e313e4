// iot-provision: its feature lands with its own issue; until then it says so instead of pretending.
#include <cstdio>

#include "applet.hpp"

void iot_provision_help() {
    printf("Usage: iot-provision [OPTIONS]\n\n"
           "iot-provision is not available in this build yet: it arrives with its own feature.\n");
}

int iot_provision_main(int, char**) { return iot::not_available("iot-provision"); }
