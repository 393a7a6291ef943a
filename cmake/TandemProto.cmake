# tandem_proto_library(<target> <proto files...>)
#
# Runs protoc with grpc_cpp_plugin on the given .proto files and builds the
# generated *.pb.cc / *.grpc.pb.cc into the static library <target> (gRPC
# route_guide's rg_grpc_proto pattern): editing our own .cc files never
# rebuilds generated code, and the generated code is compiled without our
# warning flags (it is not ours to fix).
#
# Import paths are rooted at the repository, so
#   replica-engine/proto/engine.proto
# generates
#   ${CMAKE_BINARY_DIR}/proto_gen/replica-engine/proto/engine.{pb,grpc.pb}.{h,cc}
# and users include "replica-engine/proto/engine.grpc.pb.h". The generated
# include directory is exported PUBLIC, with protobuf and grpc++.
#
# Bookworm: gRPC 1.51 has a CMake config; protobuf 3.21 has none, so it comes
# from CMake's FindProtobuf (protobuf::libprotobuf, protobuf::protoc).

find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)

function(tandem_proto_library target)
  set(protos ${ARGN})
  if(NOT protos)
    message(FATAL_ERROR "tandem_proto_library(${target}): no .proto files given")
  endif()
  set(out_dir ${CMAKE_BINARY_DIR}/proto_gen)
  set(import_root ${CMAKE_SOURCE_DIR})

  if(TARGET protobuf::protoc)
    set(protoc_exe $<TARGET_FILE:protobuf::protoc>)
  else()
    set(protoc_exe ${Protobuf_PROTOC_EXECUTABLE})
  endif()
  set(plugin_exe $<TARGET_FILE:gRPC::grpc_cpp_plugin>)

  set(srcs)
  set(hdrs)
  foreach(proto IN LISTS protos)
    get_filename_component(abs ${proto} ABSOLUTE)
    file(RELATIVE_PATH rel ${import_root} ${abs})
    if(rel MATCHES "^\\.\\.")
      message(FATAL_ERROR "tandem_proto_library(${target}): ${proto} is outside ${import_root}")
    endif()
    string(REGEX REPLACE "\\.proto$" "" stem ${rel})
    set(gen_srcs ${out_dir}/${stem}.pb.cc ${out_dir}/${stem}.grpc.pb.cc)
    set(gen_hdrs ${out_dir}/${stem}.pb.h ${out_dir}/${stem}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${gen_srcs} ${gen_hdrs}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
      COMMAND ${protoc_exe}
              --proto_path=${import_root}
              --cpp_out=${out_dir}
              --grpc_out=${out_dir}
              --plugin=protoc-gen-grpc=${plugin_exe}
              ${rel}
      WORKING_DIRECTORY ${import_root}
      DEPENDS ${abs}
      COMMENT "protoc ${rel}"
      VERBATIM)
    list(APPEND srcs ${gen_srcs})
    list(APPEND hdrs ${gen_hdrs})
  endforeach()

  add_library(${target} STATIC ${srcs} ${hdrs})
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${out_dir}>)
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf gRPC::grpc++)
  # Generated code gets neither tandem_warnings nor -Werror; keep it quiet.
  target_compile_options(${target} PRIVATE -w)
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
