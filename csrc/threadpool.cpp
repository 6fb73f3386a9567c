// Persistent worker threads; the calling thread participates as worker 0 (see threadpool.hpp).
#include "threadpool.hpp"

#include <chrono>
#include <string>
#include <system_error>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DCRT_PAUSE() _mm_pause()
#else
#define DCRT_PAUSE() ((void)0)
#endif

namespace dcrt {

namespace {
// How long a worker stays awake after a job. Long enough to bridge the layers of one
// inference and back-to-back inferences; after it the worker sleeps and costs nothing (the
// caller never waits for it: see parallel_for).
constexpr auto kSpinFor = std::chrono::microseconds(200);
// How long the caller spins for workers that hold a task before it blocks on done_. Such a
// worker is running (it claimed a task), so the wait is at most one task; blocking would add
// a futex wake-up (tens of microseconds on a VM) to every op of a big network.
constexpr auto kCallerSpin = std::chrono::microseconds(500);

constexpr int64_t kSpinForNs = std::chrono::duration_cast<std::chrono::nanoseconds>(kSpinFor).count();
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Spins until pred() or `limit` has passed; returns pred(). Every 16 rounds of pauses it
// yields the core: if the thread it waits for shares this core it gets to run.
template <class Pred, class Dur>
bool spin_until(Pred&& pred, Dur limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (unsigned i = 1;; ++i) {
    if (pred()) return true;
    for (int k = 0; k < 8; ++k) DCRT_PAUSE();
    if ((i & 15) == 0) {
      std::this_thread::yield();
      if (std::chrono::steady_clock::now() > end) return pred();
    }
  }
}
}  // namespace

ThreadPool::ThreadPool(unsigned threads) : n_(threads ? threads : 1) {
  workers_.reserve(n_ - 1);
  for (unsigned i = 1; i < n_; ++i) {
    try {
      workers_.emplace_back([this, i] { worker_loop(i); });
    } catch (const std::system_error& e) {
      // Stop and join what started, then report: a half-built pool must not outlive this.
      {
        std::lock_guard<std::mutex> lk(m_);
        stop_.store(true);
      }
      wake_.notify_all();
      for (auto& t : workers_) t.join();
      throw std::system_error(e.code(), "could not start worker thread " + std::to_string(i) + " of " +
                                            std::to_string(n_ - 1) + " (ask for fewer threads)");
    }
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_tasks(unsigned id) {
  for (;;) {
    const size_t t = next_.fetch_add(1, std::memory_order_relaxed);
    if (t >= n_tasks_) break;
    try {
      (*fn_)(t, id);
    } catch (...) {
      std::lock_guard<std::mutex> lk(m_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::leave() {
  // seq_cst pairs with the caller's caller_waiting_ store / inflight_ load (Dekker): either it
  // sees this decrement or this sees that it waits, and then wakes it under the lock.
  if (inflight_.fetch_sub(1) == 1 && caller_waiting_.load()) {
    std::lock_guard<std::mutex> lk(m_);
    done_.notify_all();
  }
}

void ThreadPool::worker_loop(unsigned id) {
  uint64_t seen = 0, st = 0;
  const auto ready = [&] {
    st = state_.load(std::memory_order_acquire);
    return stop_.load(std::memory_order_acquire) || ((st & 1) && (st >> 1) != seen);
  };
  for (;;) {
    if (!spin_until(ready, kSpinFor)) {
      std::unique_lock<std::mutex> lk(m_);
      sleepers_.fetch_add(1);  // seq_cst: pairs with the caller's state_ store / sleepers_ load
      wake_.wait(lk, ready);
      sleepers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = st >> 1;
    inflight_.fetch_add(1);
    // Still the job we saw, still open? (Else it closed while we came: claim nothing.)
    if (state_.load() == st) run_tasks(id);
    leave();
  }
}

void ThreadPool::note_activity() { last_end_ns_.store(now_ns(), std::memory_order_relaxed); }

bool ThreadPool::helpers_available(bool wake) const {
  if (n_ == 1) return false;
  if (sleepers_.load(std::memory_order_relaxed) < n_ - 1) return true;  // someone is awake
  return wake || now_ns() - last_end_ns_.load(std::memory_order_relaxed) < kSpinForNs;
}

void ThreadPool::parallel_for(size_t n_tasks, const std::function<void(size_t, unsigned)>& fn, bool wake) {
  if (n_tasks == 0) return;
  std::unique_lock<std::mutex> busy(busy_, std::defer_lock);
  if (n_tasks == 1 || n_ == 1 || !busy.try_lock()) {
    for (size_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  fn_ = &fn;
  n_tasks_ = n_tasks;
  next_.store(0, std::memory_order_relaxed);
  const uint64_t gen = ++gen_;
  state_.store(gen << 1 | 1);  // open (seq_cst: publishes fn_/n_tasks_/next_ too)
  if (sleepers_.load() > 0 && (wake || now_ns() - last_end_ns_.load(std::memory_order_relaxed) < kSpinForNs)) {
    { std::lock_guard<std::mutex> lk(m_); }  // a sleeper is either in wait() or will see state_
    wake_.notify_all();
    wakeups_.fetch_add(1, std::memory_order_relaxed);
  }
  run_tasks(0);
  state_.store(gen << 1);  // closed: every task is claimed; late workers claim nothing
  const auto finished = [&] { return inflight_.load() == 0; };
  if (!spin_until(finished, kCallerSpin)) {
    caller_waiting_.store(true);
    caller_blocks_.fetch_add(1, std::memory_order_relaxed);
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, finished);
    caller_waiting_.store(false);
  }
  fn_ = nullptr;
  last_end_ns_.store(now_ns(), std::memory_order_relaxed);
  std::lock_guard<std::mutex> lk(m_);
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace dcrt
