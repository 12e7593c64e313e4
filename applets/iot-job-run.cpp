// iot-job-run: its feature lands with its own issue; until then it says so instead of pretending.
#include <cstdio>

#include "applet.hpp"

void iot_job_run_help() {
    printf("Usage: iot-job-run [OPTIONS]\n\n"
           "iot-job-run is not available in this build yet: it arrives with its own feature.\n");
}

int iot_job_run_main(int, char**) { return iot::not_available("iot-job-run"); }
