// iot-metrics: its feature lands with its own issue; until then it says so instead of pretending.
#include <cstdio>

#include "applet.hpp"

void iot_metrics_help() {
    printf("Usage: iot-metrics [OPTIONS]\n\n"
           "iot-metrics is not available in this build yet: it arrives with its own feature.\n");
}

int iot_metrics_main(int, char**) { return iot::not_available("iot-metrics"); }
