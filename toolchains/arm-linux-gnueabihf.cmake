# Toolchain for arm-linux-gnueabihf: cmake -DCMAKE_TOOLCHAIN_FILE=toolchains/arm-linux-gnueabihf.cmake (see cross-common.cmake).
set(IOT_CROSS_TRIPLET arm-linux-gnueabihf)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(IOT_CROSS_QEMU qemu-arm-static)
# 32-bit targets: 64-bit off_t and ino_t (glibc's LFS), or stat() and readdir() fail with
# EOVERFLOW on files over 2 GiB and on filesystems with 64-bit inode numbers or directory
# offsets (XFS, btrfs, overlayfs, NFS; and every one under qemu-user on a 64-bit kernel).
# Not _TIME_BITS=64: Debian bookworm's 32-bit OpenSSL uses a 32-bit time_t in its API.
set(CMAKE_C_FLAGS_INIT "-D_FILE_OFFSET_BITS=64")
# GCC's note that GCC 7.1 changed how some std::vector iterators are passed on ARM concerns
# mixing objects from GCC < 7.1; everything here comes from one compiler.
set(CMAKE_CXX_FLAGS_INIT "-D_FILE_OFFSET_BITS=64 -Wno-psabi")
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
