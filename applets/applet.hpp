// What every applet file provides and may use. An applet file holds its help, its options and its
// main, nothing else; the work is in lib/.
#pragma once

#define APPLET(name, id, dir, summary) \
    int id##_main(int argc, char** argv); \
    void id##_help();
#include "applets.def"
#undef APPLET

namespace iot {
// The exit codes every applet keeps.
enum Exit { kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitUnknownApplet = 127 };
// Print "<applet>: <message>" on stderr; returns `code` for `return fail(...)`.
int fail(const char* applet, int code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
// The --version text: iotbox version, the applets built in and the linked library versions.
void print_version();
// An applet's own options, "--x V" or "--x=V": is_option says whether argv[i] is --x (either
// form); option_value returns its value (advancing i past a separate value), nullptr if missing.
bool is_option(const char* arg, const char* name);
const char* option_value(int argc, char** argv, int& i, const char* name);
}  // namespace iot
