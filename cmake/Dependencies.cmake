# Debian bookworm packages, found through pkg-config (liburing 2.3, libaio has
# no .pc file, ISA-L 2.30).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET liburing)
# OpenSSL's libcrypto (libssl-dev): HMAC-SHA256 and random nonces of the data
# protocol's HELLO proof (docs/protocol.md, CHALLENGE).
pkg_check_modules(LIBCRYPTO REQUIRED IMPORTED_TARGET libcrypto)

find_library(LIBAIO_LIBRARY NAMES aio REQUIRED)
find_path(LIBAIO_INCLUDE_DIR NAMES libaio.h REQUIRED)
add_library(tandem_libaio INTERFACE)
target_link_libraries(tandem_libaio INTERFACE ${LIBAIO_LIBRARY})
target_include_directories(tandem_libaio INTERFACE ${LIBAIO_INCLUDE_DIR})

find_library(ISAL_LIBRARY NAMES isal REQUIRED)
find_path(ISAL_INCLUDE_DIR NAMES isa-l/crc.h REQUIRED)
add_library(tandem_isal INTERFACE)
target_link_libraries(tandem_isal INTERFACE ${ISAL_LIBRARY})
target_include_directories(tandem_isal INTERFACE ${ISAL_INCLUDE_DIR})
