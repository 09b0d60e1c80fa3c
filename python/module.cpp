// attnbench._core: the registry, variants and the fp64 reference of libattnbench_attention on
// NumPy arrays. The package around it (attnbench/__init__.py) converts inputs; this module
// only accepts float32 C-contiguous arrays and runs on their buffers without a copy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "attention/npy.h"
#include "attention/plugin.h"
#include "attention/reference.h"
#include "attention/registry.h"
#include "attention/version.h"

namespace py = pybind11;

namespace {

bool is_float32(const py::array& a) {
  return a.dtype().equal(py::dtype::of<float>());
}

// q, k or v as a [B,H,N,D] tensor over the array's own buffer; `shape` gets the array's shape.
// The same rank, size and value checks (and messages) as `attnbench apply` on .npy files.
attn::Tensor view_of(const py::array& a, const char* name, std::vector<int64_t>* shape = nullptr) {
  const bool aligned = reinterpret_cast<uintptr_t>(a.data()) % alignof(float) == 0;
  if (!is_float32(a) || !(a.flags() & py::array::c_style) || !aligned)
    throw py::type_error(std::string(name) + ": expected an aligned float32 C-contiguous array");
  std::vector<int64_t> dims(a.shape(), a.shape() + a.ndim());
  const auto [b, h, n, d] = attn::as_bhnd(dims, name);
  auto* data = const_cast<float*>(static_cast<const float*>(a.data()));  // never written
  {
    py::gil_scoped_release release;
    attn::check_finite(data, size_t(a.size()), name);
  }
  if (shape) *shape = dims;
  return attn::Tensor::view(data, b, h, n, d);
}

py::array_t<float> apply(const std::string& spec, const py::array& q, const py::array& k,
                         const py::array& v, bool causal, float scale) {
  auto attention = attn::make_attention(spec);
  std::vector<int64_t> q_shape;
  const attn::Tensor tq = view_of(q, "q", &q_shape), tk = view_of(k, "k"), tv = view_of(v, "v");
  const attn::Shape s = attn::attention_shape(tq, tk, tv, causal, scale);
  attention->validate(s);
  py::array_t<float> out(q_shape);  // the shape of q, as apply's output file
  attn::Tensor to = attn::Tensor::view(out.mutable_data(), s.batch, s.heads, s.nq, s.dim);
  {
    py::gil_scoped_release release;
    attention->forward(s, tq, tk, tv, to);
  }
  return out;
}

// The output and dq, dk, dv of variant `spec` for dout = ∂L/∂out: forward_train, then backward,
// with the GIL released; the same checks (and messages) as `apply --dout --grads-out`.
py::tuple apply_with_gradients(const std::string& spec, const py::array& q, const py::array& k,
                               const py::array& v, const py::array& dout, bool causal,
                               float scale) {
  auto attention = attn::make_attention(spec);
  if (!attention->has_backward())
    throw attn::UsageError(attention->name() +
                           " has no backward yet; `attnbench list` marks the variants with one");
  std::vector<int64_t> q_shape, k_shape;
  const attn::Tensor tq = view_of(q, "q", &q_shape), tk = view_of(k, "k", &k_shape),
                     tv = view_of(v, "v"), tdout = view_of(dout, "dout");
  const attn::Shape s = attn::attention_shape(tq, tk, tv, causal, scale);
  attention->validate(s);
  py::array_t<float> out(q_shape), dq(q_shape), dk(k_shape), dv(k_shape);
  attn::Tensor to = attn::Tensor::view(out.mutable_data(), s.batch, s.heads, s.nq, s.dim);
  attn::Tensor tdq = attn::Tensor::view(dq.mutable_data(), s.batch, s.heads, s.nq, s.dim);
  attn::Tensor tdk = attn::Tensor::view(dk.mutable_data(), s.batch, s.heads, s.nk, s.dim);
  attn::Tensor tdv = attn::Tensor::view(dv.mutable_data(), s.batch, s.heads, s.nk, s.dim);
  {
    py::gil_scoped_release release;
    attn::Saved saved;
    attention->forward_train(s, tq, tk, tv, to, saved);
    attention->backward(s, tq, tk, tv, to, saved, tdout, {tdq, tdk, tdv});
  }
  return py::make_tuple(out, dq, dk, dv);
}

py::array_t<double> reference(const py::array& q, const py::array& k, const py::array& v,
                              bool causal, float scale) {
  std::vector<int64_t> q_shape;
  const attn::Tensor tq = view_of(q, "q", &q_shape), tk = view_of(k, "k"), tv = view_of(v, "v");
  const attn::Shape s = attn::attention_shape(tq, tk, tv, causal, scale);
  s.check();
  auto* out = new std::vector<double>;
  py::capsule owner(out, [](void* p) { delete static_cast<std::vector<double>*>(p); });
  {
    py::gil_scoped_release release;
    *out = attn::reference_attention(s, tq, tk, tv);
  }
  return py::array_t<double>(q_shape, out->data(), owner);  // NumPy owns the vector: no copy
}

// The float64 → float32 conversion of .npy reading, with its range check and message.
py::array_t<float> to_float32(const py::array_t<double, py::array::c_style>& a, const char* name) {
  py::array_t<float> out(std::vector<int64_t>(a.shape(), a.shape() + a.ndim()));
  attn::to_float32_checked(a.data(), size_t(a.size()), out.mutable_data(), name);
  return out;
}

const char* kind_name(attn::ParamSpec::Kind kind) {
  switch (kind) {
    case attn::ParamSpec::Kind::Int:
      return "int";
    case attn::ParamSpec::Kind::Float:
      return "float";
    case attn::ParamSpec::Kind::Bool:
      return "bool";
    case attn::ParamSpec::Kind::Choice:
      return "choice";
    case attn::ParamSpec::Kind::Text:
      return "text";
  }
  return "text";
}

// Every registered variant as {name, doc, params: [{key, kind, default, doc, min, max,
// choices}]}; min and max are None where unbounded, as `attnbench list` leaves them out.
py::list variants() {
  py::list all;
  for (const auto& v : attn::variants()) {
    py::list params;
    for (const auto& p : v.params) {
      py::dict d;
      d["key"] = p.key;
      d["kind"] = kind_name(p.kind);
      d["default"] = p.default_value.empty() ? py::object(py::none()) : py::str(p.default_value);
      d["doc"] = p.doc;
      const bool numeric =
          p.kind == attn::ParamSpec::Kind::Int || p.kind == attn::ParamSpec::Kind::Float;
      d["min"] = numeric && p.min > -1e299 ? py::object(py::float_(p.min)) : py::none();
      d["max"] = numeric && p.max < 1e299 ? py::object(py::float_(p.max)) : py::none();
      d["choices"] = p.choices;
      d["describe"] = p.describe();
      params.append(d);
    }
    py::dict d;
    d["name"] = v.name;
    d["doc"] = v.doc;
    d["params"] = params;
    all.append(d);
  }
  return all;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "attnbench core: variants, apply and the fp64 reference over NumPy arrays";
  // Bad input is the caller's mistake in Python, whichever exit code the CLI gives it.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const attn::UsageError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const attn::RuntimeError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.attr("VERSION") = ATTNBENCH_VERSION;
  m.attr("ABI_VERSION") = ATTNBENCH_ABI_VERSION;
  m.def("variants", &variants);
  m.def("apply", &apply, py::arg("spec"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("causal"), py::arg("scale"));
  m.def("apply_with_gradients", &apply_with_gradients, py::arg("spec"), py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("dout"), py::arg("causal"), py::arg("scale"));
  m.def("reference", &reference, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal"),
        py::arg("scale"));
  m.def("to_float32", &to_float32, py::arg("a"), py::arg("name"));
  m.def("load_plugin", &attn::load_plugin, py::arg("path"));
  m.def("load_plugins_from_env", &attn::load_plugins_from_env);
}
