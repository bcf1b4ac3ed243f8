# DLPX_CHECK_CFLAG(FLAG, VARIABLE)
# -------------------------------
# Appends FLAG to VARIABLE when the C compiler accepts it without a warning
# (tested with -Werror, so unknown -W options are not silently kept).
AC_DEFUN([DLPX_CHECK_CFLAG], [
  AS_VAR_PUSHDEF([dlpx_cache], [dlpx_cv_cflag_$1])
  AC_CACHE_CHECK([whether $CC accepts $1], [dlpx_cache], [
    dlpx_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -Werror $1"
    AC_LINK_IFELSE([AC_LANG_PROGRAM([], [])],
      [AS_VAR_SET([dlpx_cache], [yes])], [AS_VAR_SET([dlpx_cache], [no])])
    CFLAGS=$dlpx_save_CFLAGS])
  AS_VAR_IF([dlpx_cache], [yes], [$2="${$2} $1"])
  AS_VAR_POPDEF([dlpx_cache])
])
