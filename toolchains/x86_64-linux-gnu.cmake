# Cross toolchain for x86_64-linux-gnu (Debian's cross compiler and the :amd64 multiarch -dev
# packages). Usable on its own with a sysroot of yours: set CMAKE_SYSROOT (and PKG_CONFIG_LIBDIR)
# before including this file, e.g. cmake -DCMAKE_SYSROOT=/opt/sdk/sysroot -DCMAKE_TOOLCHAIN_FILE=...
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER x86_64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE x86_64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# Never let pkg-config hand the host's libraries to the cross link.
if(NOT DEFINED ENV{PKG_CONFIG_LIBDIR})
  set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/x86_64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
endif()
