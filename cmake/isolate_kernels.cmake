# cmake -DOBJECTS=a.o;b.o -DOUTPUT=out.o -DKEEP=symbol -DSUFFIX=tag -DLINKER=ld -DNM=nm -DOBJCOPY=objcopy -P
#
# Links the objects of one kernel level into one relocatable object and renames every symbol it
# defines, except KEEP (its entry point), to name.lmtk_SUFFIX. The copies of inline functions and
# template instances in it (COMDAT groups included) then cannot be merged with another level's
# copies at the final link: whichever the linker met first would otherwise serve every level, and
# an AVX-512 copy of a helper would take the SSE4.2 path down with SIGILL.
cmake_minimum_required(VERSION 3.20)
foreach(var OBJECTS OUTPUT KEEP SUFFIX LINKER NM OBJCOPY)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "isolate_kernels.cmake: ${var} is not set")
  endif()
endforeach()

set(combined "${OUTPUT}.combined.o")
execute_process(COMMAND "${LINKER}" -r -o "${combined}" ${OBJECTS} RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "isolate_kernels.cmake: ${LINKER} -r failed: ${err}")
endif()
execute_process(COMMAND "${NM}" --defined-only "${combined}" OUTPUT_VARIABLE listing RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "isolate_kernels.cmake: ${NM} failed: ${err}")
endif()
# Local symbols too: a COMDAT group is named by a symbol that may be local (GCC's D5 groups of
# constructors and destructors), and two levels' groups of one name would still be merged.
string(REGEX MATCHALL "[^\n]+" lines "${listing}")
list(REMOVE_DUPLICATES lines)
set(map "")
set(kept FALSE)
set(renamed "")
foreach(line IN LISTS lines)
  # "<address> <kind> <name>"; a name has no spaces.
  if(line MATCHES "^[0-9a-fA-F]* *[A-Za-z] ([^ ]+)$")
    set(name "${CMAKE_MATCH_1}")
    if(name STREQUAL KEEP)
      set(kept TRUE)
    elseif(NOT name IN_LIST renamed)
      list(APPEND renamed "${name}")
      string(APPEND map "${name} ${name}.lmtk_${SUFFIX}\n")
    endif()
  endif()
endforeach()
if(NOT kept)
  message(FATAL_ERROR "isolate_kernels.cmake: ${KEEP} is not defined in ${OBJECTS}")
endif()
file(WRITE "${OUTPUT}.symbols" "${map}")
execute_process(COMMAND "${OBJCOPY}" "--redefine-syms=${OUTPUT}.symbols" "${combined}" "${OUTPUT}"
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "isolate_kernels.cmake: ${OBJCOPY} failed: ${err}")
endif()
file(REMOVE "${combined}")
