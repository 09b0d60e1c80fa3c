#include "attention/plan.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "attention/kernels/online_softmax.h"

namespace attn {

using kernels::kQueryRows;
using kernels::OnlineSoftmax;

void HeadPattern::add_block(Positions rows, int64_t pass) {
  blocks.push_back({rows, int64_t(spans.size()), 0, pass});
  passes = std::max(passes, pass + 1);
}

void HeadPattern::add_span(const KeySpan& span) {
  if (span.keys.count <= 0) return;  // an empty span costs nothing and changes nothing
  spans.push_back(span);
  ++blocks.back().count;
}

namespace {

int64_t floor_div(int64_t a, int64_t b) {
  return a / b - (a % b != 0 && a < 0);
}
int64_t ceil_div(int64_t a, int64_t b) {
  return -floor_div(-a, b);
}

void broken(const std::string& what) {
  throw std::logic_error("tile plan: " + what);
}

}  // namespace

std::pair<int64_t, int64_t> bounded_range(const HeadPattern& p, const KeySpan& sp, int64_t i) {
  const Positions& k = sp.keys;
  if (!sp.partial) return {0, k.count};
  // Key positions lie in [i + lo, i + hi]; clamping keeps the sums far from overflow.
  const int64_t first = std::max(i - kUnbounded / 2, i + sp.lo);
  const int64_t last = std::min(i + kUnbounded / 2, i + sp.hi);
  int64_t c0, c1;
  if (k.gathered) {
    const int64_t* g = p.gather.data() + k.base;
    c0 = std::lower_bound(g, g + k.count, first) - g;
    c1 = std::upper_bound(g, g + k.count, last) - g;
  } else {
    c0 = std::max<int64_t>(0, ceil_div(first - k.base, k.step));
    c1 = std::min(k.count, floor_div(last - k.base, k.step) + 1);
  }
  return {c0, std::max(c0, c1)};
}

std::vector<uint8_t> gathered_rows(const HeadPattern& p, int64_t nq) {
  std::vector<uint8_t> g(nq, 0);
  for (const QueryBlock& b : p.blocks)
    if (b.rows.gathered)
      for (int64_t t = 0; t < b.rows.count; ++t) g[position(p, b.rows, t)] = 1;
  return g;
}

namespace {

// Visible keys of span `sp` for query position i.
int64_t visible_count(const HeadPattern& p, const KeySpan& sp, int64_t i) {
  const auto [c0, c1] = bounded_range(p, sp, i);
  if (!sp.skip_hidden) return c1 - c0;
  int64_t n = 0;
  for (int64_t c = c0; c < c1; ++c) n += !p.hidden[position(p, sp.keys, c)];
  return n;
}

// The rows of block b whose output it supplies, by their index in the block.
template <class F>
void for_each_owned_row(const HeadPattern& p, const QueryBlock& b,
                        const std::vector<uint8_t>& gathered, F&& f) {
  for (int64_t t = 0; t < b.rows.count; ++t) {
    const int64_t i = position(p, b.rows, t);
    if (b.rows.gathered || b.pass || !gathered[i]) f(i);
  }
}

void check_positions(const HeadPattern& p, const Positions& pos, int64_t n, const char* what) {
  if (pos.count < 0 || pos.step < 1) broken(std::string(what) + " with a negative count or step");
  if (pos.count == 0) return;
  if (pos.gathered) {
    if (pos.base < 0 || pos.base + pos.count > int64_t(p.gather.size()))
      broken(std::string(what) + " outside the gather list");
    for (int64_t t = 0; t < pos.count; ++t) {
      const int64_t x = p.gather[pos.base + t];
      if (x < 0 || x >= n || (t && x <= p.gather[pos.base + t - 1]))
        broken(std::string(what) + " gathered out of range or not ascending");
    }
  } else if (pos.base < 0 || pos.base + (pos.count - 1) * pos.step >= n) {
    broken(std::string(what) + " out of range");
  }
}

void check_pattern(const HeadPattern& p, int64_t nq, int64_t nk) {
  if (!p.hidden.empty() && int64_t(p.hidden.size()) != nk) broken("hidden flags of wrong length");
  if (p.leading < 0 || p.leading > int64_t(p.blocks.size())) broken("leading blocks out of range");
  std::vector<int> strided(nq, 0), gathered(nq, 0), later(nq * (p.passes - 1), 0);
  for (const QueryBlock& b : p.blocks) {
    if (b.rows.count < 1 || b.rows.count > kQueryRows) broken("a block of 0 or > 64 rows");
    if (b.pass < 0 || b.pass >= p.passes || (b.pass && b.rows.gathered))
      broken("a block in a pass out of range, or gathered rows after pass 0");
    check_positions(p, b.rows, nq, "query rows");
    for (int64_t t = 0; t < b.rows.count; ++t) {
      const int64_t i = position(p, b.rows, t);
      if (b.pass && ++later[(b.pass - 1) * nq + i] > 1)
        broken("query row " + std::to_string(i) + " twice in pass " + std::to_string(b.pass));
      if (!b.pass) ++(b.rows.gathered ? gathered : strided)[i];
    }
    if (b.first < 0 || b.first + b.count > int64_t(p.spans.size())) broken("spans out of range");
    for (int64_t a = b.first; a < b.first + b.count; ++a) {
      const KeySpan& sp = p.spans[a];
      check_positions(p, sp.keys, nk, "key span");
      if (sp.skip_hidden && p.hidden.empty()) broken("skip_hidden without hidden flags");
    }
  }
  for (int64_t i = 0; i < nq; ++i)
    if (gathered[i] > 1 || (!gathered[i] && strided[i] != 1) || strided[i] > 1)
      broken("query row " + std::to_string(i) + " is not owned by exactly one block");
}

double count_pairs(const HeadPattern& p, int64_t nq) {
  const std::vector<uint8_t> gathered = gathered_rows(p, nq);
  double pairs = 0;
  for (const QueryBlock& b : p.blocks)
    for_each_owned_row(p, b, gathered, [&](int64_t i) {
      for (int64_t a = b.first; a < b.first + b.count; ++a)
        pairs += double(visible_count(p, p.spans[a], i));
    });
  return pairs;
}

// Key blocks a span reads, ascending, each once.
template <class F>
void for_each_key_block(const HeadPattern& p, const Positions& keys, F&& f) {
  const int64_t B = TilePlan::kKeyBlock;
  if (!keys.gathered && keys.step <= B) {  // consecutive keys never skip a key block
    for (int64_t kb = keys.base / B; kb <= position(p, keys, keys.count - 1) / B; ++kb) f(kb);
    return;
  }
  int64_t prev = -1;
  for (int64_t t = 0; t < keys.count; ++t) {
    const int64_t kb = position(p, keys, t) / B;
    if (kb != prev) f(kb), prev = kb;
  }
}

void build_transpose(HeadPattern& p, int64_t nk) {
  const int64_t kbs = (nk + TilePlan::kKeyBlock - 1) / TilePlan::kKeyBlock;
  p.key_block_start.assign(kbs + 1, 0);
  for (const QueryBlock& b : p.blocks)
    for (int64_t a = b.first; a < b.first + b.count; ++a)
      for_each_key_block(p, p.spans[a].keys, [&](int64_t kb) { ++p.key_block_start[kb + 1]; });
  for (int64_t kb = 0; kb < kbs; ++kb) p.key_block_start[kb + 1] += p.key_block_start[kb];
  p.refs.assign(p.key_block_start.back(), {});
  std::vector<int64_t> fill(p.key_block_start.begin(), p.key_block_start.end() - 1);
  for (int64_t bi = 0; bi < int64_t(p.blocks.size()); ++bi) {
    const QueryBlock& b = p.blocks[bi];
    for (int64_t a = b.first; a < b.first + b.count; ++a)
      for_each_key_block(p, p.spans[a].keys, [&](int64_t kb) {
        p.refs[fill[kb]++] = {bi, a - b.first};
      });
  }
}

template <class T>
double vector_bytes(const std::vector<T>& v) {
  return double(v.capacity() * sizeof(T));
}

}  // namespace

void TilePlan::finish() {
  for (int64_t pi : head_pattern)
    if (pi < 0 || pi >= int64_t(patterns.size())) broken("head without a pattern");
  for (HeadPattern& p : patterns) {
    check_pattern(p, nq, nk);
    p.pairs = count_pairs(p, nq);
    build_transpose(p, nk);
  }
}

double TilePlan::pairs() const {
  double total = 0;
  for (int64_t pi : head_pattern) total += patterns[pi].pairs;
  return total;
}

void TilePlan::row_keys(int64_t h, int64_t i, std::vector<int64_t>& out) const {
  const HeadPattern& p = of_head(h);
  out.clear();
  auto holds = [&](const Positions& r) {
    return r.gathered
               ? std::binary_search(p.gather.begin() + r.base, p.gather.begin() + r.base + r.count,
                                    i)
               : i >= r.base && (i - r.base) % r.step == 0 && (i - r.base) / r.step < r.count;
  };
  auto take = [&](const QueryBlock& b) {
    for (int64_t a = b.first; a < b.first + b.count; ++a)
      for_each_visible(p, p.spans[a], i, [&](int64_t j) { out.push_back(j); });
  };
  // Pass 0: the block that supplies row i's output, a gathered one before the strided one.
  const QueryBlock* owner = nullptr;
  for (const QueryBlock& b : p.blocks)
    if (b.pass == 0 && holds(b.rows) && (b.rows.gathered || !owner)) owner = &b;
  if (owner) take(*owner);
  for (const QueryBlock& b : p.blocks)
    if (b.pass > 0 && holds(b.rows)) take(b);
  std::sort(out.begin(), out.end());
}

double TilePlan::bytes() const {
  double b = vector_bytes(patterns) + vector_bytes(head_pattern);
  for (const HeadPattern& p : patterns)
    b += vector_bytes(p.blocks) + vector_bytes(p.spans) + vector_bytes(p.gather) +
         vector_bytes(p.hidden) + vector_bytes(p.key_block_start) + vector_bytes(p.refs);
  return b;
}

// ---- The executor ------------------------------------------------------------------------

namespace {

// Where the executor keeps what a pattern gathers: per (batch·head), its gathered keys and
// values (kv: [G keys][G values], D floats each) and its gathered rows' outputs.
struct Scratch {
  Scratch(const TilePlan& plan, const Shape& s) : out_offset(plan.patterns.size()) {
    for (size_t pi = 0; pi < plan.patterns.size(); ++pi) {
      int64_t rows = 0;
      for (const QueryBlock& b : plan.patterns[pi].blocks) {
        out_offset[pi].push_back(rows);
        if (b.rows.gathered) rows += b.rows.count, gathers_rows = true;
      }
      out_rows.push_back(rows);
    }
    kv_at.push_back(0), out_at.push_back(0), lse_at.push_back(0), pass_at.push_back(0);
    for (int64_t bh = 0; bh < s.heads_total(); ++bh) {
      const HeadPattern& p = plan.of_head(bh % s.heads);
      const int64_t pi = plan.head_pattern[bh % s.heads], extra = p.passes - 1;
      kv_at.push_back(kv_at.back() + 2 * int64_t(p.gather.size()) * s.dim);
      out_at.push_back(out_at.back() + out_rows[pi] * s.dim);
      lse_at.push_back(lse_at.back() + (extra ? p.passes * s.nq : 0));
      pass_at.push_back(pass_at.back() + extra * s.nq * s.dim);
    }
  }
  double floats() const {
    return double(kv_at.back() + out_at.back() + lse_at.back() + pass_at.back());
  }
  std::vector<std::vector<int64_t>> out_offset;  // [pattern][block] row in the gathered output
  std::vector<int64_t> out_rows;                 // [pattern] gathered rows
  std::vector<int64_t> kv_at, out_at;            // [bh] offsets into kv and out (floats)
  // Patterns of several passes: [bh] offsets of the log-sum-exps [pass][position] and of the
  // outputs of passes 1.. [pass - 1][position][D].
  std::vector<int64_t> lse_at, pass_at;
  bool gathers_rows = false;
};

double scratch_floats(const TilePlan& plan, const Shape& s, const Scratch& sc) {
  const double per_thread =
      kQueryRows * ((sc.gathers_rows ? 3.0 : 2.0) * s.dim + kernels::kKeyTile + 3);
  return per_thread * omp_get_max_threads() + sc.floats();
}

// A partial span: logit bias 0 where the element predicate holds, −∞ elsewhere.
template <bool RowsGathered, bool KeysGathered, bool SkipHidden>
void attend_partial(OnlineSoftmax& sm, const HeadPattern& p, const QueryBlock& b, const KeySpan& sp,
                    const float* k, const float* v, int64_t ld) {
  // By value: the kernel's stores into its score tile then cannot alias them (the hidden
  // flags are bytes, which may alias anything), so the per-element test stays in registers.
  const int64_t* g = p.gather.data();
  const uint8_t* hidden = p.hidden.data();
  const int64_t rbase = b.rows.base, rstep = b.rows.step, kbase = sp.keys.base;
  const int64_t kstep = sp.keys.step, lo = sp.lo, hi = sp.hi;
  sm.attend_masked(k, v, ld, sp.keys.count, [=](int64_t r, int64_t c) {
    const int64_t i = RowsGathered ? g[rbase + r] : rbase + r * rstep;
    const int64_t j = KeysGathered ? g[kbase + c] : kbase + c * kstep;
    const bool in = j - i >= lo && j - i <= hi && !(SkipHidden && hidden[j]);
    return in ? 0.0f : OnlineSoftmax::kHidden;
  });
}

template <bool RowsGathered, bool KeysGathered>
void attend_partial(OnlineSoftmax& sm, const HeadPattern& p, const QueryBlock& b, const KeySpan& sp,
                    const float* k, const float* v, int64_t ld) {
  if (sp.skip_hidden)
    attend_partial<RowsGathered, KeysGathered, true>(sm, p, b, sp, k, v, ld);
  else
    attend_partial<RowsGathered, KeysGathered, false>(sm, p, b, sp, k, v, ld);
}

// Which (batch·head, block) task t is: first every head's leading blocks, head-major (the
// heaviest start first so that dynamic scheduling balances them), then the rest, head-major.
struct TaskOrder {
  TaskOrder(const TilePlan& plan, const Shape& s) : heads(s.heads) {
    lead.push_back(0), rest.push_back(0);
    for (int64_t bh = 0; bh < s.heads_total(); ++bh) {
      const HeadPattern& p = plan.of_head(bh % s.heads);
      lead.push_back(lead.back() + p.leading);
      rest.push_back(rest.back() + int64_t(p.blocks.size()) - p.leading);
    }
  }
  int64_t count() const { return lead.back() + rest.back(); }
  std::pair<int64_t, int64_t> at(int64_t t, const TilePlan& plan) const {
    const bool leading = t < lead.back();
    const std::vector<int64_t>& pre = leading ? lead : rest;
    if (!leading) t -= lead.back();
    const int64_t bh = std::upper_bound(pre.begin(), pre.end(), t) - pre.begin() - 1;
    return {bh, t - pre[bh] + (leading ? 0 : plan.of_head(bh % heads).leading)};
  }
  int64_t heads;
  std::vector<int64_t> lead, rest;  // prefix sums over bh
};

// Combines the passes of every row by their log-sum-exps: out = Σ_p e^(lse_p − m) o_p / Σ_p
// e^(lse_p − m), m = max_p lse_p, over the passes that saw a key (in pass order).
// With row_lse, also the row's log-sum-exp over the union, m + log Σ_p e^(lse_p − m).
void combine_passes(const TilePlan& plan, const Shape& s, const Scratch& sc, const float* lses,
                    const float* pass_out, Tensor& out, float* row_lse) {
  const int64_t D = s.dim;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < s.heads_total() * s.nq; ++row) {
    const int64_t bh = row / s.nq, i = row % s.nq;
    const int64_t P = plan.of_head(bh % s.heads).passes;
    if (P == 1) continue;
    const float* lse = lses + sc.lse_at[bh] + i;
    float m = OnlineSoftmax::kHidden;
    for (int64_t p = 0; p < P; ++p) m = std::max(m, lse[p * s.nq]);
    if (m == OnlineSoftmax::kHidden) continue;  // no keys at all: pass 0 wrote zeros
    float* o = out.head(bh / s.heads, bh % s.heads) + i * D;
    const float w0 = lse[0] == OnlineSoftmax::kHidden ? 0.0f : std::exp(lse[0] - m);
    float total = w0;
    for (int64_t d = 0; d < D; ++d) o[d] *= w0;
    for (int64_t p = 1; p < P; ++p) {
      if (lse[p * s.nq] == OnlineSoftmax::kHidden) continue;
      const float w = std::exp(lse[p * s.nq] - m);
      const float* op = pass_out + sc.pass_at[bh] + ((p - 1) * s.nq + i) * D;
      for (int64_t d = 0; d < D; ++d) o[d] += w * op[d];
      total += w;
    }
    for (int64_t d = 0; d < D; ++d) o[d] /= total;
    if (row_lse) row_lse[row] = m + std::log(total);
  }
}

}  // namespace

void execute_plan(const TilePlan& plan, const Shape& s, const Tensor& q, const Tensor& k,
                  const Tensor& v, Tensor& out, float* row_lse) {
  const int64_t D = s.dim;
  const float scale = s.softmax_scale();
  const Scratch sc(plan, s);
  FloatBuffer kv(size_t(sc.kv_at.back())), gout(size_t(sc.out_at.back()));
  FloatBuffer lses(size_t(sc.lse_at.back())), pass_out(size_t(sc.pass_at.back()));
  std::fill_n(lses.data(), lses.size(), OnlineSoftmax::kHidden);  // rows a pass leaves out
  for (int64_t bh = 0; bh < s.heads_total(); ++bh) {
    const std::vector<int64_t>& G = plan.of_head(bh % s.heads).gather;
    const int64_t b = bh / s.heads, h = bh % s.heads, g = int64_t(G.size());
    for (int64_t a = 0; a < g; ++a) {
      std::copy_n(k.head(b, h) + G[a] * D, D, kv.data() + sc.kv_at[bh] + a * D);
      std::copy_n(v.head(b, h) + G[a] * D, D, kv.data() + sc.kv_at[bh] + (g + a) * D);
    }
  }
  // Per pattern that gathers rows and needs log-sum-exps: the rows a gathered block owns.
  std::vector<std::vector<uint8_t>> owned_elsewhere(plan.patterns.size());
  for (size_t pi = 0; pi < plan.patterns.size(); ++pi)
    if (sc.gathers_rows && (row_lse || plan.patterns[pi].passes > 1))
      owned_elsewhere[pi] = gathered_rows(plan.patterns[pi], s.nq);
  const TaskOrder order(plan, s);
#pragma omp parallel
  {
    OnlineSoftmax sm(D);
    FloatBuffer qbuf(sc.gathers_rows ? size_t(kQueryRows * D) : 0);
    float lse_rows[kQueryRows];
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < order.count(); ++t) {
      const auto [bh, bi] = order.at(t, plan);
      const int64_t b = bh / s.heads, h = bh % s.heads, pi = plan.head_pattern[h];
      const HeadPattern& p = plan.patterns[pi];
      const QueryBlock& blk = p.blocks[bi];
      const Positions& rows = blk.rows;
      const int64_t g = int64_t(p.gather.size());
      const float* kvh = kv.data() + sc.kv_at[bh];
      if (rows.gathered) {
        for (int64_t r = 0; r < rows.count; ++r)
          std::copy_n(q.head(b, h) + p.gather[rows.base + r] * D, D, qbuf.data() + r * D);
        sm.begin(qbuf.data(), D, rows.count, scale);
      } else {
        sm.begin(q.head(b, h) + rows.base * D, rows.step * D, rows.count, scale);
      }
      for (int64_t a = blk.first; a < blk.first + blk.count; ++a) {
        const KeySpan& sp = p.spans[a];
        const Positions& keys = sp.keys;
        const float* kp = keys.gathered ? kvh + keys.base * D : k.head(b, h) + keys.base * D;
        const float* vp = keys.gathered ? kvh + (g + keys.base) * D : v.head(b, h) + keys.base * D;
        const int64_t ld = keys.gathered ? D : keys.step * D;
        if (!sp.partial)
          sm.attend(kp, vp, ld, keys.count);
        else if (rows.gathered)
          keys.gathered ? attend_partial<true, true>(sm, p, blk, sp, kp, vp, ld)
                        : attend_partial<true, false>(sm, p, blk, sp, kp, vp, ld);
        else
          keys.gathered ? attend_partial<false, true>(sm, p, blk, sp, kp, vp, ld)
                        : attend_partial<false, false>(sm, p, blk, sp, kp, vp, ld);
      }
      float* lse = p.passes > 1 || row_lse ? lse_rows : nullptr;
      if (rows.gathered)
        sm.finish(gout.data() + sc.out_at[bh] + sc.out_offset[pi][bi] * D, D, lse);
      else if (blk.pass == 0)
        sm.finish(out.head(b, h) + rows.base * D, rows.step * D, lse);
      else
        sm.finish(pass_out.data() + sc.pass_at[bh] + ((blk.pass - 1) * s.nq + rows.base) * D,
                  rows.step * D, lse);
      // A pass-0 row's log-sum-exp comes from the block that supplies its output, as the
      // output itself does (a strided block's value for a gathered row is dropped).
      if (lse)
        for (int64_t r = 0; r < rows.count; ++r) {
          const int64_t i = position(p, rows, r);
          if (blk.pass == 0 && !rows.gathered && owned_elsewhere[pi].size() &&
              owned_elsewhere[pi][i])
            continue;
          if (p.passes > 1) lses[sc.lse_at[bh] + blk.pass * s.nq + i] = lse[r];
          if (row_lse && blk.pass == 0) row_lse[bh * s.nq + i] = lse[r];
        }
    }
  }
  // Gathered rows replace what strided blocks wrote for them.
  for (int64_t bh = 0; bh < s.heads_total(); ++bh) {
    const int64_t pi = plan.head_pattern[bh % s.heads];
    const HeadPattern& p = plan.patterns[pi];
    for (size_t bi = 0; bi < p.blocks.size(); ++bi) {
      const Positions& rows = p.blocks[bi].rows;
      if (!rows.gathered) continue;
      for (int64_t r = 0; r < rows.count; ++r)
        std::copy_n(gout.data() + sc.out_at[bh] + (sc.out_offset[pi][bi] + r) * D, D,
                    out.head(bh / s.heads, bh % s.heads) + p.gather[rows.base + r] * D);
    }
  }
  combine_passes(plan, s, sc, lses.data(), pass_out.data(), out, row_lse);
}

double execute_plan_bytes(const TilePlan& plan, const Shape& s) {
  const Scratch sc(plan, s);
  return scratch_floats(plan, s, sc) * sizeof(float);
}

// ---- PlanAttention -----------------------------------------------------------------------

std::shared_ptr<const TilePlan> PlanAttention::plan(const Shape& s) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Shape& c = plan_shape_;
  if (plan_ && c.heads == s.heads && c.nq == s.nq && c.nk == s.nk && c.causal == s.causal)
    return plan_;
  validate(s);
  auto p = std::make_shared<TilePlan>(build_plan(s));
  p->finish();
  plan_ = std::move(p), plan_shape_ = s;
  return plan_;
}

void PlanAttention::forget_plan() {
  std::lock_guard<std::mutex> lock(mutex_);
  plan_.reset();
}

void PlanAttention::forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                            Tensor& out) {
  execute_plan(*plan(s), s, q, k, v, out);
}

double PlanAttention::flops(const Shape& s) const {
  return 4.0 * s.dim * plan(s)->pairs() * s.batch;
}

double PlanAttention::extra_bytes(const Shape& s) const {
  const auto p = plan(s);
  return p->bytes() + execute_plan_bytes(*p, s);
}

bool PlanAttention::visited_keys(const Shape& s, int64_t, int64_t h, int64_t i,
                                 VisitedKeys& out) const {
  out.assign(1, {});
  plan(s)->row_keys(h, i, out[0]);
  return true;
}

}  // namespace attn
