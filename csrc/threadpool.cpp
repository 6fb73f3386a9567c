// Persistent worker threads; the calling thread participates as worker 0.
#include "threadpool.hpp"

#include <utility>

namespace dcrt {

ThreadPool::ThreadPool(unsigned threads) : n_(threads ? threads : 1) {
  for (unsigned i = 1; i < n_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_ = true;
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
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(m_);
      wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_tasks(id);
    {
      std::lock_guard<std::mutex> lk(m_);
      if (--active_ == 0) done_.notify_one();
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
    active_ = n_ - 1;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  run_tasks(0);
  std::unique_lock<std::mutex> lk(m_);
  done_.wait(lk, [&] { return active_ == 0; });
  fn_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace dcrt
