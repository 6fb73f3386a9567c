// A small persistent thread pool owned by each loaded model (the caller is worker 0).
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
  // threads >= 1; starts threads - 1 workers. Where one cannot be started, the ones already
  // running are stopped and joined and std::system_error is thrown (never a hang).
  explicit ThreadPool(unsigned threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  unsigned size() const { return n_; }
  // Whether a parallel_for(.., wake) now would have any help: a worker awake, or one it
  // would wake. Where not, callers run the unsplit form of their work (a heuristic: a worker
  // that wakes up meanwhile is simply not used).
  bool helpers_available(bool wake) const;
  // The owner's work (an inference) just ended: what "a burst of back-to-back calls" counts from.
  void note_activity();
  // Slow-path counters (tests and diagnostics): futex wake-ups the callers issued, and times a
  // caller blocked on a worker that held a task.
  uint64_t wakeups() const { return wakeups_.load(std::memory_order_relaxed); }
  uint64_t caller_blocks() const { return caller_blocks_.load(std::memory_order_relaxed); }

  // Runs fn(task, worker) for every task in [0, n_tasks); worker < size(). Blocks until done;
  // rethrows the first exception.
  //
  // The caller claims tasks like any worker, so it never waits for a worker that is not
  // there: a sleeping worker is woken (one futex call) and joins if it arrives while tasks
  // remain; once the tasks are all claimed the job is closed, and the caller waits only for
  // workers that hold a task. Workers spin for kSpinFor after a job (the next layer of an
  // inference, or the next back-to-back inference, needs no wake-up), yielding the core now
  // and then so that a spinning worker never starves a caller scheduled on its core, and then
  // sleep. While another caller holds the pool (concurrent infer calls on one model) the
  // tasks run on the calling thread alone: no deadlock, no oversubscription.
  // wake = false: the job is too small to pay for a wake-up, so sleeping workers are left
  // asleep -- unless the previous job ended less than a spin window ago (a burst of
  // back-to-back calls: one wake-up then keeps the workers spinning through it). Workers that
  // are awake join in either way.
  void parallel_for(size_t n_tasks, const std::function<void(size_t, unsigned)>& fn, bool wake = true);

 private:
  void worker_loop(unsigned id);
  void run_tasks(unsigned id);
  void leave();
  unsigned n_ = 1;
  std::vector<std::thread> workers_;
  std::mutex busy_;  // one job at a time
  std::mutex m_;     // sleeping and waking; error_
  std::condition_variable wake_, done_;
  const std::function<void(size_t, unsigned)>* fn_ = nullptr;
  size_t n_tasks_ = 0;
  uint64_t gen_ = 0;                     // jobs started (caller side, under busy_)
  std::atomic<uint64_t> state_{0};       // gen << 1 | open
  std::atomic<size_t> next_{0};          // next task to claim
  std::atomic<unsigned> inflight_{0};    // workers inside the current job
  std::atomic<unsigned> sleepers_{0};    // workers blocked on wake_
  std::atomic<bool> caller_waiting_{false};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> wakeups_{0}, caller_blocks_{0};
  std::atomic<int64_t> last_end_ns_{INT64_MIN / 2};  // steady_clock, end of the last job
  std::exception_ptr error_;
};

}  // namespace dcrt
