// A small persistent thread pool owned by each loaded model.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dcrt {

class ThreadPool {
 public:
  explicit ThreadPool(unsigned threads);  // threads >= 1; the caller is worker 0
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  unsigned size() const { return n_; }

  // Runs fn(task, worker) for every task in [0, n_tasks); worker < size(). Blocks until
  // done; rethrows the first exception. Workers spin for kSpinFor after a job before they
  // sleep, and the caller spins as long for them to finish, so the layers of one inference
  // (and back-to-back inferences) hand work over without a futex wake (~10+ us on a VM each). While another caller holds the pool (concurrent
  // infer calls on one model) the tasks run on the calling thread alone: no deadlock,
  // no oversubscription.
  void parallel_for(size_t n_tasks, const std::function<void(size_t, unsigned)>& fn);

 private:
  void worker_loop(unsigned id);
  void run_tasks(unsigned id);
  unsigned n_;
  std::vector<std::thread> workers_;
  std::mutex busy_;  // one job at a time
  std::mutex m_;
  std::condition_variable wake_, done_;
  const std::function<void(size_t, unsigned)>* fn_ = nullptr;
  size_t n_tasks_ = 0;
  std::atomic<size_t> next_{0};
  std::atomic<unsigned> active_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

}  // namespace dcrt
