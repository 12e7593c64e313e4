# Toolchain for mipsel-linux-gnu: cmake -DCMAKE_TOOLCHAIN_FILE=toolchains/mipsel-linux-gnu.cmake (see cross-common.cmake).
set(IOT_CROSS_TRIPLET mipsel-linux-gnu)
set(CMAKE_SYSTEM_PROCESSOR mipsel)
set(IOT_CROSS_QEMU qemu-mipsel-static)
# MIPS32 has no 64-bit atomic instructions: OpenSSL's __atomic_*_8 calls come from libatomic
# (libcrypto.pc says so in Libs.private, which a static FindOpenSSL does not read).
set(CMAKE_C_STANDARD_LIBRARIES_INIT "-latomic")
set(CMAKE_CXX_STANDARD_LIBRARIES_INIT "-latomic")
# 32-bit targets: 64-bit off_t and ino_t (glibc's LFS), or stat() and readdir() fail with
# EOVERFLOW on files over 2 GiB and on filesystems with 64-bit inode numbers or directory
# offsets (XFS, btrfs, overlayfs, NFS; and every one under qemu-user on a 64-bit kernel).
# Not _TIME_BITS=64: Debian bookworm's 32-bit OpenSSL uses a 32-bit time_t in its API.
set(CMAKE_C_FLAGS_INIT "-D_FILE_OFFSET_BITS=64")
set(CMAKE_CXX_FLAGS_INIT "-D_FILE_OFFSET_BITS=64")
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
