// Persistent worker threads; the calling thread participates as worker 0.
#include "threadpool.hpp"

#include <chrono>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DCRT_PAUSE() _mm_pause()
#else
#define DCRT_PAUSE() std::this_thread::yield()
#endif

namespace dcrt {

namespace {
constexpr auto kSpinFor = std::chrono::microseconds(300);

// Spins until pred() or kSpinFor has passed; returns pred().
template <class Pred>
bool spin_until(Pred&& pred) {
  const auto end = std::chrono::steady_clock::now() + kSpinFor;
  for (unsigned i = 0;; ++i) {
    if (pred()) return true;
    DCRT_PAUSE();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > end) return pred();
  }
}
}  // namespace

ThreadPool::ThreadPool(unsigned threads) : n_(threads ? threads : 1) {
  for (unsigned i = 1; i < n_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
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

void ThreadPool::worker_loop(unsigned id) {
  uint64_t seen = 0;
  const auto ready = [&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; };
  for (;;) {
    if (!spin_until(ready)) {
      std::unique_lock<std::mutex> lk(m_);
      wake_.wait(lk, ready);
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    run_tasks(id);
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lk(m_);  // pairs with the caller's wait: no lost wake-up
      done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(size_t n_tasks, const std::function<void(size_t, unsigned)>& fn) {
  if (n_tasks == 0) return;
  std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
  if (n_tasks == 1 || n_ == 1 || !busy.owns_lock()) {
    for (size_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(m_);
    fn_ = &fn;
    n_tasks_ = n_tasks;
    next_.store(0, std::memory_order_relaxed);
    active_.store(n_ - 1, std::memory_order_relaxed);
    error_ = nullptr;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  run_tasks(0);
  const auto finished = [&] { return active_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(finished)) {
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, finished);
  }
  std::lock_guard<std::mutex> lk(m_);
  fn_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace dcrt
