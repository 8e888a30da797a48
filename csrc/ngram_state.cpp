// Token-only online n-gram state (frontier-spec F1): one pass over the token stream in scoring
// order, giving each position the continuation most often seen after its (order-1)-token context
// earlier in that order. Plain C++ with a C ABI (loaded by pgolf.ngram.native through ctypes); it
// needs no torch or Python headers, so it builds on any machine with a C++ compiler.
//
// Per position, strictly: read the context's bucket (the hint), then count (context, token), then
// shift the token into the window. The token being scored enters only keys written after the read.
// The key functions here must stay identical to pgolf/ngram/keys.py (the numpy fallback and the
// tests compare outputs position by position).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

constexpr int kMaxOrder = 32;
constexpr int kLookahead = 16;  // positions whose buckets are prefetched ahead of the read
constexpr uint64_t kSeed = 0x70676F6C662D6E67ULL;  // "pgolf-ng": the seed of the slot constants

uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t fmix64(uint64_t x) {  // MurmurHash3's finaliser: every key bit moves the bucket index
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDULL;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ULL;
  x ^= x >> 33;
  return x;
}

struct Constants {
  uint64_t slot[kMaxOrder];  // slot[0..order-2]: context slots, oldest first; slot[kMaxOrder-1]: the pair's token
  Constants() {
    uint64_t s = kSeed;
    for (int j = 0; j < kMaxOrder; ++j) slot[j] = splitmix64(&s) | 1ULL;
  }
};
const Constants kConst;

uint64_t context_key(const int32_t* window, int k) {
  uint64_t h = 0;
  for (int j = 0; j < k; ++j) h ^= static_cast<uint64_t>(static_cast<uint32_t>(window[j]) + 1u) * kConst.slot[j];
  return fmix64(h);
}

uint64_t pair_key(uint64_t ctx, int32_t token) {
  return fmix64(ctx ^ (static_cast<uint64_t>(static_cast<uint32_t>(token) + 1u) * kConst.slot[kMaxOrder - 1]));
}

// 24-byte context bucket and 16-byte pair bucket; a zero count marks an empty bucket, so any key
// value (zero included) is storable. Full 64-bit keys are kept: bucket collisions are resolved.
struct CtxBucket {
  uint64_t key;
  uint32_t total;
  uint32_t top_count;
  int32_t top_token;
  uint32_t pad;
};
struct PairBucket {
  uint64_t key;
  uint32_t count;
  uint32_t pad;
};

// Zeroed, huge-page-advised memory: the tables are read at random, so TLB misses dominate.
void* table_alloc(size_t bytes) {
#if defined(__linux__)
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
#if defined(MADV_HUGEPAGE)
  madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
#else
  return std::calloc(bytes, 1);
#endif
}

void table_free(void* p, size_t bytes) {
  if (p == nullptr) return;
#if defined(__linux__)
  munmap(p, bytes);
#else
  (void)bytes;
  std::free(p);
#endif
}

// Range reduction without a power-of-two size (Lemire): the high bits of key * size.
inline uint64_t slot_of(uint64_t key, uint64_t size) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(key) * size) >> 64);
}

template <typename Bucket, typename Count>
Bucket* probe(Bucket* table, uint64_t size, uint64_t key, Count Bucket::*count) {
  uint64_t i = slot_of(key, size);
  for (uint64_t n = 0; n < size; ++n) {
    Bucket* b = table + i;
    if (b->*count == 0 || b->key == key) return b;  // the key's bucket, or the empty one it goes in
    if (++i == size) i = 0;
  }
  return nullptr;  // full: cannot happen with size > positions, kept as a guard
}

// Walks the spans in the given order, one position at a time.
struct Cursor {
  const int64_t* start;
  const int64_t* len;
  int64_t n_spans;
  int64_t span = 0;
  int64_t off = 0;
  bool next(int64_t* pos) {
    while (span < n_spans && off >= len[span]) {
      ++span;
      off = 0;
    }
    if (span >= n_spans) return false;
    *pos = start[span] + off++;
    return true;
  }
};

struct Pending {  // one position whose keys are computed and whose buckets are being prefetched
  int64_t pos;
  uint64_t ctx;
  uint64_t pair;
  int32_t token;
  bool has_context;
};

// Producer side of the pipeline: the window of the last k tokens in scoring order.
struct Ahead {
  Cursor cursor;
  const int32_t* tokens;
  int k;
  int filled = 0;
  int32_t window[kMaxOrder] = {};
  bool next(Pending* out, const CtxBucket* ctx, const PairBucket* pairs, uint64_t size) {
    int64_t pos;
    if (!cursor.next(&pos)) return false;
    out->pos = pos;
    out->token = tokens[pos];
    out->has_context = filled == k;
    if (out->has_context) {
      out->ctx = context_key(window, k);
      out->pair = pair_key(out->ctx, out->token);
      const CtxBucket* cb = ctx + slot_of(out->ctx, size);
      __builtin_prefetch(cb, 1);
      __builtin_prefetch(reinterpret_cast<const char*>(cb) + sizeof(CtxBucket) - 1, 1);
      __builtin_prefetch(pairs + slot_of(out->pair, size), 1);
    }
    if (filled == k) {
      std::memmove(window, window + 1, sizeof(int32_t) * (k - 1));
      window[k - 1] = out->token;
    } else {
      window[filled++] = out->token;
    }
    return true;
  }
};

}  // namespace

extern "C" {

// Error codes (pgolf.ngram.native turns them into PgolfError messages).
enum { NGRAM_OK = 0, NGRAM_BAD_ARGS = -1, NGRAM_BAD_TOKEN = -2, NGRAM_NO_MEMORY = -3, NGRAM_TABLE_FULL = -4 };

int pgolf_ngram_abi_version(void) { return 1; }

// The context key of k tokens (oldest first): exported so the tests can hold keys.py to it.
uint64_t pgolf_ngram_context_key(const int32_t* window, int32_t k) { return context_key(window, k); }

// tokens[n_tokens]: the stream; spans (start, len) in scoring order, each position at most once.
// out_hint[pos]: the context's top continuation where its share >= threshold (float32), else -1.
// out_conf[pos]: that share (top count / total, float32), 0 where the context is unseen or short.
// stats[0]: positions with a hint; stats[1]: the bad token's position on NGRAM_BAD_TOKEN.
int pgolf_ngram_build(const int32_t* tokens, int64_t n_tokens, const int64_t* span_start, const int64_t* span_len,
                      int64_t n_spans, int32_t vocab_size, int32_t order, float threshold, double load_factor,
                      int32_t* out_hint, float* out_conf, int64_t* stats) {
  if (tokens == nullptr || out_hint == nullptr || out_conf == nullptr || stats == nullptr || n_tokens < 0 ||
      n_tokens > static_cast<int64_t>(UINT32_MAX) || n_spans < 0 || vocab_size <= 0 || order < 2 ||
      order > kMaxOrder || !(load_factor > 0.0 && load_factor <= 0.9))
    return NGRAM_BAD_ARGS;
  stats[0] = 0;
  stats[1] = -1;
  int64_t positions = 0;
  for (int64_t s = 0; s < n_spans; ++s) {
    if (span_start[s] < 0 || span_len[s] < 0 || span_start[s] + span_len[s] > n_tokens) return NGRAM_BAD_ARGS;
    positions += span_len[s];
  }
  for (int64_t i = 0; i < n_tokens; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      stats[1] = i;
      return NGRAM_BAD_TOKEN;
    }
  }
  // Each position inserts at most one context and one pair, so size > positions never fills.
  const uint64_t size = static_cast<uint64_t>(static_cast<double>(positions) / load_factor) + 64;
  CtxBucket* ctx = static_cast<CtxBucket*>(table_alloc(size * sizeof(CtxBucket)));
  PairBucket* pairs = static_cast<PairBucket*>(table_alloc(size * sizeof(PairBucket)));
  if (ctx == nullptr || pairs == nullptr) {
    table_free(ctx, size * sizeof(CtxBucket));
    table_free(pairs, size * sizeof(PairBucket));
    return NGRAM_NO_MEMORY;
  }
  Ahead ahead{Cursor{span_start, span_len, n_spans}, tokens, order - 1};
  Pending queue[kLookahead];
  int head = 0, count = 0;
  while (count < kLookahead && ahead.next(&queue[(head + count) % kLookahead], ctx, pairs, size)) ++count;
  int rc = NGRAM_OK;
  int64_t fired = 0;
  while (count > 0) {
    const Pending p = queue[head];
    head = (head + 1) % kLookahead;
    --count;
    if (ahead.next(&queue[(head + count) % kLookahead], ctx, pairs, size)) ++count;
    out_hint[p.pos] = -1;
    out_conf[p.pos] = 0.0f;
    if (!p.has_context) continue;
    CtxBucket* cb = probe(ctx, size, p.ctx, &CtxBucket::total);
    PairBucket* pb = probe(pairs, size, p.pair, &PairBucket::count);
    if (cb == nullptr || pb == nullptr) {
      rc = NGRAM_TABLE_FULL;
      break;
    }
    // 1. read: the state holds only positions before this one in scoring order
    if (cb->total > 0) {
      const float share = static_cast<float>(static_cast<double>(cb->top_count) / static_cast<double>(cb->total));
      out_conf[p.pos] = share;
      if (share >= threshold) {
        out_hint[p.pos] = cb->top_token;
        ++fired;
      }
    }
    // 2. write: count (context, token); the top changes only on a strictly greater count
    if (cb->total == 0) cb->key = p.ctx;
    if (pb->count == 0) pb->key = p.pair;
    ++cb->total;
    ++pb->count;
    if (pb->count > cb->top_count) {
      cb->top_count = pb->count;
      cb->top_token = p.token;
    }
  }
  stats[0] = fired;
  table_free(ctx, size * sizeof(CtxBucket));
  table_free(pairs, size * sizeof(PairBucket));
  return rc;
}

}  // extern "C"
