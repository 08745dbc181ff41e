# Writes OUT: a header defining GDN_BUILD_COMMIT, the commit the sources at SRC were built from
# (git describe: 12-digit hash, "-dirty" when tracked files had changes), rewritten only when it
# changes so that nothing recompiles on an unchanged commit. Run at every build (a custom target),
# so a binary records its own commit wherever it later runs.
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT commit)
  set(commit "unknown")
endif()
file(WRITE "${OUT}.tmp" "#pragma once\n#define GDN_BUILD_COMMIT \"${commit}\"\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
