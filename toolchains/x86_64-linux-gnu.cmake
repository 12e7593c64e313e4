# Toolchain for x86_64-linux-gnu: cmake -DCMAKE_TOOLCHAIN_FILE=toolchains/x86_64-linux-gnu.cmake (see cross-common.cmake).
set(IOT_CROSS_TRIPLET x86_64-linux-gnu)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
include(${CMAKE_CURRENT_LIST_DIR}/cross-common.cmake)
