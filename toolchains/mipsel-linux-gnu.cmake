# Toolchain for mipsel-linux-gnu: cmake -DCMAKE_TOOLCHAIN_FILE=toolchains/mipsel-linux-gnu.cmake (see cross-common.cmake).
set(IOT_CROSS_TRIPLET mipsel-linux-gnu)
set(CMAKE_SYSTEM_PROCESSOR mipsel)
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
