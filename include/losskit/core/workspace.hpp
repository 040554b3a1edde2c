#pragma once
/// WorkspacePool: the reusable scratch of a functor whose const calls may run
/// at the same time from several threads (design.md: nothing a call reuses is
/// shared between concurrent callers).
///
/// A call checks a workspace out (acquire), uses it, and the lease returns it
/// when it goes out of scope. Concurrent callers get distinct workspaces; the
/// pool creates one only when every workspace it has is checked out, so it
/// holds as many as the most callers that were ever concurrent. The last one
/// returned is the next one handed out, so repeated calls from one thread get
/// the same (already sized) workspace back and allocate nothing. Two mutex
/// locks per call: negligible against calls of microseconds and more.
///
/// Copying (or moving) a functor gives the new object an empty pool:
/// workspaces are never shared between objects, and copies stay cheap.
/// OpenMP threads inside one call share that call's workspace (the workspace
/// itself keeps per-thread slots where it needs them).
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace losskit {
namespace detail {

template <class Workspace>
class WorkspacePool {
 public:
  /// A checked-out workspace; returned to its pool on destruction.
  class Lease {
   public:
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { pool_.give_back(std::move(workspace_)); }

    Workspace& operator*() const { return *workspace_; }
    Workspace* operator->() const { return workspace_.get(); }

   private:
    friend class WorkspacePool;
    Lease(const WorkspacePool& pool, std::unique_ptr<Workspace> w) : pool_(pool), workspace_(std::move(w)) {}
    const WorkspacePool& pool_;
    std::unique_ptr<Workspace> workspace_;
  };

  WorkspacePool() = default;
  WorkspacePool(const WorkspacePool&) noexcept {}
  WorkspacePool& operator=(const WorkspacePool&) noexcept { return *this; }
  ~WorkspacePool() = default;

  /// A workspace no other caller holds (a new, empty one if all are out).
  /// const: the pool is a synchronised cache, not part of the functor's value.
  Lease acquire() const {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!idle_.empty()) {
        std::unique_ptr<Workspace> w = std::move(idle_.back());
        idle_.pop_back();
        return Lease(*this, std::move(w));
      }
      // Room for every workspace to come back without give_back allocating.
      idle_.reserve(++created_);
    }
    return Lease(*this, std::make_unique<Workspace>());
  }

 private:
  void give_back(std::unique_ptr<Workspace> w) const noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(std::move(w));  // within the reserved capacity: no allocation, no throw
  }

  mutable std::mutex mutex_;
  mutable std::vector<std::unique_ptr<Workspace>> idle_;
  mutable std::size_t created_ = 0;
};

}  // namespace detail
}  // namespace losskit
