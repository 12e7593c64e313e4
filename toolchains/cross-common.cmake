# Shared by toolchains/<triplet>.cmake: Debian's cross compiler <triplet>-gcc and the :<arch>
# multiarch -dev packages, or a sysroot of yours (-DCMAKE_SYSROOT=...; PKG_CONFIG_LIBDIR follows
# it unless set in the environment).
# Expects IOT_CROSS_TRIPLET and CMAKE_SYSTEM_PROCESSOR to be set by the including file, and
# IOT_CROSS_QEMU (the qemu-user binary that runs the target's programs) unless the host runs them.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${IOT_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${IOT_CROSS_TRIPLET}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${IOT_CROSS_TRIPLET})
# Programs (protoc, python3) are the host's; libraries, headers and CMake packages the target's:
# the multiarch directories /usr/lib/<triplet> and /usr/include/<triplet>, or CMAKE_SYSROOT, or
# IOT_TARGET_ROOT: Debian's target packages unpacked, not installed (toolchains/target-root.sh;
# Makefile.cross uses it where multiarch cannot co-install them, e.g. mipsel).
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES IOT_TARGET_ROOT)
if(CMAKE_SYSROOT)
  set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
  set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
  set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
elseif(IOT_TARGET_ROOT)
  # Searched first; the build's own prefixes (IOT_DEPS_PREFIX) still resolve as given.
  list(APPEND CMAKE_FIND_ROOT_PATH ${IOT_TARGET_ROOT})
  foreach(lang C CXX)
    set(CMAKE_${lang}_STANDARD_INCLUDE_DIRECTORIES ${IOT_TARGET_ROOT}/usr/include/${IOT_CROSS_TRIPLET} ${IOT_TARGET_ROOT}/usr/include)
  endforeach()
endif()
# Never let pkg-config hand the host's libraries to the cross link (FindOpenSSL asks it first).
if(NOT DEFINED ENV{PKG_CONFIG_LIBDIR})
  if(CMAKE_SYSROOT OR IOT_TARGET_ROOT)
    if(CMAKE_SYSROOT)
      set(iot_pc_root ${CMAKE_SYSROOT})
    else()
      set(iot_pc_root ${IOT_TARGET_ROOT})
    endif()
    set(ENV{PKG_CONFIG_LIBDIR} "${iot_pc_root}/usr/lib/${IOT_CROSS_TRIPLET}/pkgconfig:${iot_pc_root}/usr/lib/pkgconfig:${iot_pc_root}/usr/share/pkgconfig")
    set(ENV{PKG_CONFIG_SYSROOT_DIR} "${iot_pc_root}")
  else()
    set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${IOT_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
  endif()
endif()
# Target programs (the unit tests, gtest discovery) run under qemu-user, called explicitly: no
# binfmt_misc needed. The test binaries are linked static, so qemu needs no -L sysroot.
if(IOT_CROSS_QEMU AND NOT CMAKE_CROSSCOMPILING_EMULATOR)
  find_program(IOT_CROSS_QEMU_PATH ${IOT_CROSS_QEMU})
  if(IOT_CROSS_QEMU_PATH)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${IOT_CROSS_QEMU_PATH})
  endif()
endif()
