# server/derp/stun.cmake: the STUN server of the embedded DERP region (codec
# and UDP listener), included from server/derp/CMakeLists.txt. concord_net
# provides the "host:port" parsing and printing every listener shares.
add_library(concord_stun STATIC ${CMAKE_CURRENT_LIST_DIR}/stun.c
            ${CMAKE_CURRENT_LIST_DIR}/stun_udp.c)
target_link_libraries(concord_stun PUBLIC concord_log concord_net PkgConfig::UV)
