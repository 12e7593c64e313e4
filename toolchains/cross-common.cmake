# Shared by toolchains/<triplet>.cmake: Debian's cross compiler <triplet>-gcc and the :<arch>
# multiarch -dev packages (or a sysroot of yours: set CMAKE_SYSROOT and PKG_CONFIG_LIBDIR first).
# Expects IOT_CROSS_TRIPLET and CMAKE_SYSTEM_PROCESSOR to be set by the including file.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${IOT_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${IOT_CROSS_TRIPLET}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${IOT_CROSS_TRIPLET})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# Never let pkg-config hand the host's libraries to the cross link.
if(NOT DEFINED ENV{PKG_CONFIG_LIBDIR})
  set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${IOT_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
endif()
