#include "harness/inputs.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include "attention/npy.h"
#include "attention/random.h"

namespace attnbench {
namespace {

// Stream `stream` of the input generators for `seed` (attention/random.h).
attn::RandomStream input_stream(uint64_t seed, uint64_t stream) {
  return attn::RandomStream(seed, attn::RandomDomain::kInputs, stream);
}

// Streams of the generators (the index of their RandomStream).
enum Stream : uint64_t {
  kQ = 1,
  kK = 2,
  kV = 3,
  kCentroid = 10,
  kAssignQ,
  kAssignK,
  kFrequency = 20,
  kPhase,
  kRecallKey = 30,
  kRecallValue,
  kRecallPlace,
};

using Params = std::map<std::string, std::string>;

std::string valid_distributions() {
  std::string out;
  for (const auto& d : distributions()) out += (out.empty() ? "" : ", ") + std::string(d.syntax);
  return out;
}

[[noreturn]] void bad_dist(const std::string& dist, const std::string& why) {
  throw attn::UsageError("input distribution '" + dist + "': " + why +
                         "; valid: " + valid_distributions());
}

// "key=value,key=value" → map; every key must be in `allowed`.
Params parse_params(const std::string& dist, const std::string& text,
                    const std::vector<std::string>& allowed) {
  Params out;
  size_t pos = 0;
  while (pos <= text.size() && !text.empty()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(pos, comma - pos);
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) bad_dist(dist, "'" + item + "' is not key=value");
    const std::string key = item.substr(0, eq);
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      bad_dist(dist, "unknown parameter '" + key + "'");
    out[key] = item.substr(eq + 1);
    pos = comma + 1;
  }
  return out;
}

// The number under `key` (or `fallback`); must be > 0, or >= 0 when `zero_ok`.
double number_param(const std::string& dist, const Params& p, const std::string& key,
                    double fallback, bool zero_ok = false) {
  auto it = p.find(key);
  if (it == p.end()) return fallback;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0' || !std::isfinite(v) || v < 0 || (v == 0 && !zero_ok))
    bad_dist(dist, key + "='" + it->second + "' must be a number " + (zero_ok ? ">= 0" : "> 0"));
  return v;
}

Inputs empty_inputs(const attn::Shape& s) {
  return {attn::Tensor(s.batch, s.heads, s.nq, s.dim), attn::Tensor(s.batch, s.heads, s.nk, s.dim),
          attn::Tensor(s.batch, s.heads, s.nk, s.dim)};
}

// Every token of every head sits near one of C centroids shared by q and k of that head.
// Centroids are N(0, σ²I) with σ² = 8 / (D·scale), so a token's logit against a key of its own
// cluster is ≈ 8 and against another cluster ≈ N(0, 64/D): attention concentrates on the
// ~n/C keys of the query's cluster. Noise is `noise`·σ per coordinate.
void fill_clustered_tokens(attn::Tensor& t, const std::vector<double>& centroids, int64_t clusters,
                           double sigma, double noise, const attn::RandomStream& assign,
                           const attn::RandomStream& noise_stream) {
  const int64_t n = t.seq(), d = t.dim(), heads = t.batch() * t.heads();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < heads * n; ++row) {
    const int64_t bh = row / n;
    const int64_t c = int64_t(assign.below(uint64_t(row), uint64_t(clusters)));
    const double* centre = centroids.data() + (bh * clusters + c) * d;
    float* x = t.data() + row * d;
    for (int64_t e = 0; e < d; ++e)
      x[e] = float(centre[e] + noise * sigma * noise_stream.normal(uint64_t(row * d + e)));
  }
}

Inputs make_clustered(const attn::Shape& s, const std::string& dist, const Params& p,
                      uint64_t seed) {
  const double c = number_param(dist, p, "clusters", 8);
  if (c != std::floor(c) || c > 1e6) bad_dist(dist, "clusters must be a positive integer");
  const int64_t clusters = int64_t(c);
  const double noise = number_param(dist, p, "noise", 0.1, true);
  const double sigma = std::sqrt(8.0 / (s.dim * s.softmax_scale()));
  std::vector<double> centroids(s.heads_total() * clusters * s.dim);
  const attn::RandomStream cb = input_stream(seed, kCentroid);
  for (size_t e = 0; e < centroids.size(); ++e) centroids[e] = sigma * cb.normal(e);
  Inputs in = empty_inputs(s);
  fill_clustered_tokens(in.q, centroids, clusters, sigma, noise, input_stream(seed, kAssignQ),
                        input_stream(seed, kQ));
  fill_clustered_tokens(in.k, centroids, clusters, sigma, noise, input_stream(seed, kAssignK),
                        input_stream(seed, kK));
  fill_gaussian(in.v, seed, kV);
  return in;
}

constexpr double kLocalPeakLogit = 12;

// Random Fourier features of position (Rahimi & Recht 2007): with ω_f ~ N(0, 1/w²) and phases
// β_f shared by q and k of a head, φ_i = [cos(ω_f i + β_f), sin(ω_f i + β_f)]_f gives
// φ_i·φ_j = Σ_f cos(ω_f (i − j)) ≈ (D/2)·exp(−(i − j)²/(2w²)). q_i = a·φ_i + noise and
// k_j = a·φ_j + noise, with a chosen so that the logit at i = j is 12: the logits are a
// Gaussian bump around the diagonal of width w over a floor of ≈ N(0, 12²/D).
void fill_local_tokens(attn::Tensor& t, const std::vector<double>& omega,
                       const std::vector<double>& phase, double amplitude,
                       const attn::RandomStream& noise) {
  const int64_t n = t.seq(), d = t.dim(), heads = t.batch() * t.heads(), pairs = d / 2;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < heads * n; ++row) {
    const int64_t bh = row / n, i = row % n;
    float* x = t.data() + row * d;
    for (int64_t f = 0; f < pairs; ++f) {
      const double angle = omega[bh * pairs + f] * double(i) + phase[bh * pairs + f];
      x[2 * f] = float(amplitude * std::cos(angle));
      x[2 * f + 1] = float(amplitude * std::sin(angle));
    }
    if (d % 2) x[d - 1] = 0;
    // Small per-token content so that q and k differ (0.1·a per coordinate; logit noise ≈ 0.3).
    for (int64_t e = 0; e < d; ++e)
      x[e] += float(0.1 * amplitude * noise.normal(uint64_t(row * d + e)));
  }
}

Inputs make_local(const attn::Shape& s, const std::string& dist, const Params& p, uint64_t seed) {
  const double width = number_param(dist, p, "width", 16);
  const int64_t pairs = s.dim / 2;
  if (pairs == 0) bad_dist(dist, "needs head dim D >= 2");
  std::vector<double> omega(s.heads_total() * pairs), phase(omega.size());
  const attn::RandomStream fb = input_stream(seed, kFrequency), pb = input_stream(seed, kPhase);
  for (size_t e = 0; e < omega.size(); ++e) {
    omega[e] = fb.normal(e) / width;
    phase[e] = 2 * M_PI * pb.uniform(e);
  }
  const double amplitude = std::sqrt(kLocalPeakLogit / (double(pairs) * s.softmax_scale()));
  Inputs in = empty_inputs(s);
  fill_local_tokens(in.q, omega, phase, amplitude, input_stream(seed, kQ));
  fill_local_tokens(in.k, omega, phase, amplitude, input_stream(seed, kK));
  fill_gaussian(in.v, seed, kV);
  return in;
}

// Gaussian q and k each scaled by 1/sqrt(τ): the logits are N(0, 1/τ²), so the softmax of a
// row is dominated by its largest logit.
Inputs make_peaked(const attn::Shape& s, const std::string& dist, const Params& p, uint64_t seed) {
  const double tau = number_param(dist, p, "temperature", 0.02);
  Inputs in = empty_inputs(s);
  fill_gaussian(in.q, seed, kQ);
  fill_gaussian(in.k, seed, kK);
  fill_gaussian(in.v, seed, kV);
  const float f = float(1 / std::sqrt(tau));
  for (attn::Tensor* t : {&in.q, &in.k}) {
    float* x = t->data();
    const int64_t size = t->size();
#pragma omp parallel for schedule(static)
    for (int64_t e = 0; e < size; ++e) x[e] *= f;
  }
  return in;
}

// ---------------------------------------------------------------------------------------------
// recall: planted key-value pairs among distractors (docs/ALGORITHMS.md §Recall inputs).

struct RecallConfig {
  int64_t pairs = 32;
  double beta = 12, noise = 1, power = 0.01;
  std::string gap = "power";  // power | depth | a fixed gap
  int64_t fixed_gap = 0;
};

RecallConfig recall_config(const attn::Shape& s, const std::string& dist, const Params& p) {
  RecallConfig c;
  const double pairs = number_param(dist, p, "pairs", 32);
  if (pairs != std::floor(pairs) || pairs > 1e6) bad_dist(dist, "pairs must be a positive integer");
  c.pairs = int64_t(pairs);
  c.beta = number_param(dist, p, "beta", 12);
  if (c.beta > 80)
    bad_dist(dist, "beta must be <= 80 (the planted logit; exp(80) is near fp32's limit)");
  c.noise = number_param(dist, p, "noise", 1, true);
  c.power = number_param(dist, p, "power", 0.01);
  if (c.power > 1) bad_dist(dist, "power must be in (0, 1] (gap density ∝ g^(power−1))");
  if (auto it = p.find("gap"); it != p.end()) c.gap = it->second;
  if (c.gap != "power" && c.gap != "depth") {
    char* end = nullptr;
    const long long g = std::strtoll(c.gap.c_str(), &end, 10);
    if (c.gap.empty() || *end != '\0' || g < 1)
      bad_dist(dist,
               "gap='" + c.gap + "' must be power, depth or a positive integer (a fixed gap)");
    if (g >= s.nk)
      bad_dist(dist, "gap=" + c.gap + " needs n > gap, got n = " + std::to_string(s.nk));
    c.fixed_gap = g;
  }
  if (s.nq != s.nk) bad_dist(dist, "needs Nq = Nk (queries re-occur keys of the same sequence)");
  const int64_t room = c.gap == "depth" ? 2 : 4;
  if (room * c.pairs > s.nk)
    bad_dist(dist, "pairs=" + std::to_string(c.pairs) + " needs n >= " + std::to_string(room) +
                       "·pairs, got n = " + std::to_string(s.nk));
  return c;
}

// `count` unit vectors of dimension d for head bh from `stream`: orthonormal (Gram-Schmidt
// in fp64) when count <= d, independent random directions otherwise.
std::vector<double> unit_vectors(const attn::RandomStream& stream, int64_t bh, int64_t count,
                                 int64_t d) {
  std::vector<double> u(count * d);
  for (int64_t e = 0; e < count * d; ++e) u[e] = stream.normal(uint64_t(bh * count * d + e));
  for (int64_t p = 0; p < count; ++p) {
    double* x = &u[p * d];
    for (int64_t q = 0; q < p && count <= d; ++q) {
      const double* y = &u[q * d];
      double dot = 0;
      for (int64_t e = 0; e < d; ++e) dot += x[e] * y[e];
      for (int64_t e = 0; e < d; ++e) x[e] -= dot * y[e];
    }
    double norm = 0;
    for (int64_t e = 0; e < d; ++e) norm += x[e] * x[e];
    norm = std::sqrt(norm);
    for (int64_t e = 0; e < d; ++e) x[e] = norm > 0 ? x[e] / norm : (e == p % d ? 1.0 : 0.0);
  }
  return u;
}

// A gap in [1, max_gap] with density ∝ g^(a−1) (MQAR's power law, arXiv:2312.04927), by the
// inverse CDF of the continuous law on [1, max_gap + 1).
int64_t power_gap(double u, double a, int64_t max_gap) {
  const double top = std::pow(double(max_gap) + 1, a);
  const double g = std::floor(std::pow(1 + u * (top - 1), 1 / a));
  return std::clamp<int64_t>(int64_t(g), 1, max_gap);
}

constexpr int64_t kPlaceAttempts = 1000;

// The query rows of head bh: `depth` puts the queries on the last P rows and the keys on a grid
// of depths p/(P−1) over the rows before them; otherwise each pair draws a gap (power law or
// fixed) and a query row uniformly in [gap, n), rejecting rows already used.
std::vector<RecallQuery> place_pairs(const RecallConfig& c, int64_t n,
                                     const attn::RandomStream& draw, int64_t bh,
                                     const std::string& dist) {
  std::vector<RecallQuery> out;
  const int64_t P = c.pairs;
  if (c.gap == "depth") {
    const int64_t span = n - P;  // keys in [0, span), queries in [span, n)
    for (int64_t p = 0; p < P; ++p) {
      const double depth = P > 1 ? double(p) / double(P - 1) : 0.5;
      out.push_back({span + p, int64_t(std::llround(depth * double(span - 1))), p, depth});
    }
    return out;
  }
  std::vector<char> used(n, 0);
  for (int64_t p = 0; p < P; ++p) {
    bool placed = false;
    for (int64_t attempt = 0; attempt < kPlaceAttempts && !placed; ++attempt) {
      const uint64_t idx = uint64_t((bh * P + p) * kPlaceAttempts + attempt);
      const double u1 = draw.uniform(2 * idx), u2 = draw.uniform(2 * idx + 1);
      const int64_t g = c.fixed_gap ? c.fixed_gap : power_gap(u1, c.power, n - 1);
      const int64_t row = g + std::min<int64_t>(n - g - 1, int64_t(u2 * double(n - g)));
      const int64_t key = row - g;
      if (used[row] || used[key]) continue;
      used[row] = used[key] = 1, placed = true;
      out.push_back({row, key, p, n > 1 ? double(key) / double(n - 1) : 0.0});
    }
    if (!placed)
      bad_dist(dist, "cannot place " + std::to_string(P) + " pairs in n = " + std::to_string(n) +
                         " tokens; use fewer pairs");
  }
  std::sort(out.begin(), out.end(),
            [](const RecallQuery& a, const RecallQuery& b) { return a.row < b.row; });
  return out;
}

RecallProbe build_probe(const attn::Shape& s, const RecallConfig& c, const std::string& dist,
                        uint64_t seed) {
  RecallProbe probe;
  probe.pairs = c.pairs, probe.beta = c.beta;
  const int64_t heads = s.heads_total(), P = c.pairs, D = s.dim;
  probe.codebook.resize(size_t(heads * P * D));
  const attn::RandomStream place = input_stream(seed, kRecallPlace);
  const attn::RandomStream values = input_stream(seed, kRecallValue);
  for (int64_t bh = 0; bh < heads; ++bh) {
    probe.queries.push_back(place_pairs(c, s.nk, place, bh, dist));
    const std::vector<double> cb = unit_vectors(values, bh, P, D);
    std::transform(cb.begin(), cb.end(), probe.codebook.begin() + bh * P * D,
                   [](double x) { return float(x); });
  }
  return probe;
}

// Every token is a distractor with k = q = t·N(0, I) (logit against a planted query
// ~ N(0, noise²)) and v ~ N(0, I/D); planted key rows get k = q = r·κ_p, v = c_p; query rows
// get q = r·κ_p. r² · scale = beta, so the planted logit is beta (docs/ALGORITHMS.md §Recall
// inputs).
Inputs make_recall(const attn::Shape& s, const std::string& dist, const Params& p, uint64_t seed) {
  const RecallConfig c = recall_config(s, dist, p);
  const RecallProbe probe = build_probe(s, c, dist, seed);
  const double scale = s.softmax_scale(), r = std::sqrt(c.beta / scale);
  const float t = float(c.noise / (scale * r)), vs = float(1 / std::sqrt(double(s.dim)));
  Inputs in = empty_inputs(s);
  fill_gaussian(in.k, seed, kK);
  fill_gaussian(in.v, seed, kV);
  float *q = in.q.data(), *k = in.k.data(), *v = in.v.data();
  const int64_t size = in.k.size(), D = s.dim, P = c.pairs;
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < size; ++e) k[e] *= t, q[e] = k[e], v[e] *= vs;
  const attn::RandomStream keys = input_stream(seed, kRecallKey);
  for (int64_t bh = 0; bh < s.heads_total(); ++bh) {
    const std::vector<double> kappa = unit_vectors(keys, bh, P, D);
    const int64_t b = bh / s.heads, h = bh % s.heads;
    float *qh = in.q.head(b, h), *kh = in.k.head(b, h), *vh = in.v.head(b, h);
    for (const RecallQuery& rq : probe.queries[bh])
      for (int64_t e = 0; e < D; ++e) {
        const float x = float(r * kappa[rq.pair * D + e]);
        qh[rq.key * D + e] = kh[rq.key * D + e] = qh[rq.row * D + e] = x;
        vh[rq.key * D + e] = probe.codebook[(bh * P + rq.pair) * D + e];
      }
  }
  return in;
}

const std::vector<std::string> kRecallKeys = {"pairs", "beta", "noise", "gap", "power"};

std::string dims(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? "," : "") + std::to_string(shape[i]);
  return out + "]";
}

// Accepts [B,H,N,D], and [H,N,D] / [N,D] when the leading sizes are 1.
attn::Tensor load_npy(const std::string& dir, const char* name, int64_t b, int64_t h, int64_t n,
                      int64_t d) {
  const std::string path = dir + "/" + name + ".npy";
  attn::NpyArray a = attn::read_npy(path);
  const std::vector<int64_t> full = {b, h, n, d};
  bool ok = a.shape.size() >= 2 && a.shape.size() <= 4;
  if (ok) {
    const size_t drop = 4 - a.shape.size();
    for (size_t i = 0; i < drop; ++i) ok = ok && full[i] == 1;
    ok = ok && std::equal(a.shape.begin(), a.shape.end(), full.begin() + drop);
  }
  if (!ok)
    throw attn::UsageError(path + " has shape " + dims(a.shape) +
                           " but the requested shape needs " + dims(full) +
                           " ([H,N,D] allowed when B=1, [N,D] when B=H=1)");
  attn::Tensor t(b, h, n, d);
  std::copy(a.data.begin(), a.data.end(), t.data());
  return t;
}

Inputs read_npy_inputs(const attn::Shape& s, const std::string& dist) {
  const std::string dir = dist.substr(4);
  if (dir.empty()) bad_dist(dist, "npy needs a directory, e.g. npy:data/inputs");
  return {load_npy(dir, "q", s.batch, s.heads, s.nq, s.dim),
          load_npy(dir, "k", s.batch, s.heads, s.nk, s.dim),
          load_npy(dir, "v", s.batch, s.heads, s.nk, s.dim)};
}

}  // namespace

void fill_gaussian(attn::Tensor& t, uint64_t seed, uint64_t stream) {
  input_stream(seed, stream).fill_normal(t.data(), t.size());
}

Inputs make_inputs(const attn::Shape& s, const std::string& dist, uint64_t seed) {
  s.check();
  if (dist.rfind("npy:", 0) == 0) return read_npy_inputs(s, dist);
  const size_t colon = dist.find(':');
  const std::string name = dist.substr(0, colon);
  const std::string rest = colon == std::string::npos ? "" : dist.substr(colon + 1);
  if (name == "gaussian") {
    parse_params(dist, rest, {});
    Inputs in = empty_inputs(s);
    fill_gaussian(in.q, seed, kQ);
    fill_gaussian(in.k, seed, kK);
    fill_gaussian(in.v, seed, kV);
    return in;
  }
  if (name == "clustered")
    return make_clustered(s, dist, parse_params(dist, rest, {"clusters", "noise"}), seed);
  if (name == "local") return make_local(s, dist, parse_params(dist, rest, {"width"}), seed);
  if (name == "peaked")
    return make_peaked(s, dist, parse_params(dist, rest, {"temperature"}), seed);
  if (name == "recall") return make_recall(s, dist, parse_params(dist, rest, kRecallKeys), seed);
  if (name == "npy") bad_dist(dist, "npy needs a directory, e.g. npy:data/inputs");
  bad_dist(dist, "unknown distribution '" + name + "'");
}

std::optional<RecallProbe> recall_probe(const attn::Shape& s, const std::string& dist,
                                        uint64_t seed) {
  const size_t colon = dist.find(':');
  if (dist.substr(0, colon) != "recall") return std::nullopt;
  const std::string rest = colon == std::string::npos ? "" : dist.substr(colon + 1);
  return build_probe(s, recall_config(s, dist, parse_params(dist, rest, kRecallKeys)), dist, seed);
}

const std::vector<DistInfo>& distributions() {
  static const std::vector<DistInfo> all = {
      {"gaussian", "gaussian", "q, k, v i.i.d. N(0,1).",
       "logits ~ N(0,1): near-uniform attention, easy for every approximation (the baseline)."},
      {"clustered", "clustered[:clusters=8,noise=0.1]",
       "per head, q and k tokens sit at one of C random centroids shared by q and k, plus "
       "noise·σ Gaussian noise (σ set so a same-cluster logit is ≈ 8); v ~ N(0,1).",
       "sharp, cluster-structured attention: each query puts its mass on the ~n/C keys of its "
       "cluster, wherever they are. Content-based bucketing (LSH) should shine; fixed windows "
       "miss most of the mass."},
      {"local", "local[:width=16]",
       "q_i, k_j = a·[cos(ω_f·i + β_f), sin(ω_f·i + β_f)] + small noise, random Fourier features "
       "of the position with ω_f ~ N(0, 1/width²): q_i·k_j ≈ Gaussian bump in |i - j|; the "
       "logit is ≈ 12 at i = j and ≈ N(0, 144/D) far away; v ~ N(0,1).",
       "recent-token structure: most mass within |i - j| <= width. Sliding windows and local "
       "chunks should shine; random features and global low-rank views struggle."},
      {"peaked", "peaked[:temperature=0.02]",
       "gaussian q and k each scaled by 1/sqrt(temperature), so logits are N(0, 1/temperature²).",
       "near one-hot softmax rows (the max probability is close to 1): hard for random-feature "
       "kernels (Performer) whose estimates of exp(q·k) degrade with large logits; exact and "
       "top-k-like methods are unaffected."},
      {"recall", "recall[:pairs=32,beta=12,noise=1,gap=power|depth|G,power=0.01]",
       "associative recall (MQAR, arXiv:2312.04927; needle in a haystack): per head, P key-value "
       "pairs planted among distractor tokens. Keys are unit vectors κ_p (orthonormal when P <= "
       "D) times r with r²·scale = beta, so a query's logit on its planted key is beta; against "
       "a distractor it is ~ N(0, noise²), against other planted keys 0. Values of planted keys "
       "are codebook unit vectors c_p (orthonormal when P <= D), distractor values N(0, I/D). "
       "Each pair's query row re-occurs κ_p at gap g after its key: gap=power draws g with "
       "density ∝ g^(power−1) (MQAR's law), gap=G fixes it, gap=depth puts the queries on the "
       "last P rows and the keys on a grid of depths 0..1 (needle in a haystack). Distractor "
       "tokens have q = k. `run`/`sweep` then report recall@1, cosine to c_p and the attention "
       "mass on the planted key, binned by gap and depth.",
       "retrieval of one key far back: exact attention puts mass e^beta/(e^beta + ~1.6·n) on it "
       "(0.86 at n = 16384, default beta) and recalls every pair. Fixed windows lose every pair "
       "whose gap exceeds their reach (recall falls to chance 1/P); global tokens and random "
       "blocks help only by luck; hashing must bucket query and key together; random features "
       "must resolve one logit of beta among n of ~0."},
      {"npy", "npy:DIR",
       "DIR/q.npy, DIR/k.npy, DIR/v.npy (float32/float64, C order) shaped [B,H,N,D], or "
       "[H,N,D] when B = 1, or [N,D] when B = H = 1; must match the requested shape; the "
       "seed is ignored.",
       "real activations (e.g. dumped from a trained model): whatever structure they have."},
  };
  return all;
}

}  // namespace attnbench
