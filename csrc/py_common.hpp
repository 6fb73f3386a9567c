// Shared by the pybind11 modules (dcrt._core and dcrt._cuda): shapes as tuples and dcrt's C++
// exceptions as Python ones.
#pragma once
#include <pybind11/pybind11.h>

#include <exception>

#include "format.hpp"

namespace dcrt {
namespace py_common {

inline pybind11::tuple shape_tuple(const Shape& s) {
  pybind11::tuple t(s.ndim);
  for (uint32_t i = 0; i < s.ndim; ++i) t[i] = s.d[i];
  return t;
}

// PyErr_SetString with a class of dcrt.errors (FormatError, CudaError, ...).
inline void set_dcrt_error(const char* cls, const char* what) {
  pybind11::object c = pybind11::module_::import("dcrt.errors").attr(cls);
  PyErr_SetString(c.ptr(), what);
}

// Exception translator: FormatError -> dcrt.FormatError, LimitError -> dcrt.LimitError,
// InputError -> ValueError; anything
// else propagates to the translators registered before it (pybind11's default ones last).
inline void translate_core_errors(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const FormatError& e) {
    set_dcrt_error("FormatError", e.what());
  } catch (const LimitError& e) {
    set_dcrt_error("LimitError", e.what());
  } catch (const InputError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  }
}

}  // namespace py_common
}  // namespace dcrt
