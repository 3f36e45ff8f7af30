# CUDA is optional: where nvcc exists the gpu/ backend builds for Hopper (sm_90a),
# otherwise the build is CPU-only and the binaries say so at run time.
option(ULTRASERVE_CUDA "Build the CUDA backend when nvcc is found" ON)
set(ULTRASERVE_HAVE_CUDA OFF)
if(ULTRASERVE_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    # CMake 3.25 does not know that nvcc 13 takes C++20: tell it the flag.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_ARCHITECTURES OFF)  # we pass -gencode ourselves
    set(ULTRASERVE_CUDA_FLAGS -gencode=arch=compute_90a,code=sm_90a)
    set(ULTRASERVE_HAVE_CUDA ON)
  endif()
endif()
message(STATUS "ultraserve: CUDA backend ${ULTRASERVE_HAVE_CUDA}")
