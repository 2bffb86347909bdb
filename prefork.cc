/* prefork.cc - prefork 0.1.0, the implementation. See prefork.h for the manual.

   Read top to bottom, the way data flows: syscall wrappers and platform
   features (the only place with #ifdef), the self-pipe and signal handlers,
   logging and options, the System V scoreboard, the server's state,
   listeners, the worker, the parent's pool, the binary upgrade, the parent
   loop, then HTTP.

   Two process roles share this file. The parent owns a ServerState and
   never touches a connection; a worker is a forked copy that keeps to its
   WorkerState, owns one scoreboard slot and writes only that slot. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
// 64-bit file offsets where off_t is 32 bits (armhf): files over 2 GiB, and
// directories whose readdir cookies are 64-bit (ext4 seen from qemu-arm).
// Nothing in prefork.h depends on the size of off_t.
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif
#include "prefork.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstddef>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <new>
#include <type_traits>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <regex.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/openat2.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#endif

// Set-up and rare paths (binding, options, upgrades) are compiled for
// size, not speed: they run a few times in a process's life.
#define PREFORK_COLD __attribute__((cold))

namespace prefork {

/* ---------------------------------------------------------------------------
   Syscall wrappers, the only place with #ifdef. A system call that can wait
   (on a peer, a child, a lock, a signal), can fail with EINTR, or creates a
   descriptor goes through one of these, as does one with a platform variant.
   Calls that return at once and create nothing (bind, listen, setsockopt,
   getsockname, shutdown, kill, fork, exec, unlink, fstat, sigaction,
   sigprocmask, semget, semctl, the shm calls, getpid, and the identity
   calls initgroups, setgid and setuid) are made where they are needed: they cannot see EINTR, so a wrapper would only rename them.
   So is getaddrinfo, a library call with errors of its own (EAI_*).

   EINTR: a wrapper retries it unless its comment says otherwise, and keeps
   the caller's errno when it succeeds. The exceptions, each marked:
   - close() is never retried: the fd is gone either way, and a retry could
     close a descriptor another thread has just been given;
   - the waits (poll, poll_with_mask, Waiter::wait) return 0, "nothing
     ready": the signal they woke for is a byte in the self-pipe they watch;
   - connect passes it up: the connection goes on in the background and
     cannot be asked for twice; receive and send_pieces pass it up to a
     caller that looks at its own clock.

   Every descriptor is born close-on-exec (SOCK_CLOEXEC, accept4, pipe2,
   O_CLOEXEC, F_DUPFD_CLOEXEC, EPOLL_CLOEXEC), so no exec in another thread
   can leak it; the one fallback, for systems without the first three, is
   at the descriptor makers below. */
namespace sys {

// Calls f until it succeeds or fails with something other than EINTR; on
// success errno is what it was before, so an EINTR on the way never shows.
template <class F> static auto retry(F f) -> decltype(f()) {
    int saved = errno;
    decltype(f()) rc;
    do rc = f(); while (rc < 0 && errno == EINTR);
    if (rc >= 0) errno = saved;
    return rc;
}

// read(), write(), pread(): EINTR retried. read and write are called from
// many places, none of them hot: one copy each (inlined, every caller grew,
// and httpd by 1.2 KB).
__attribute__((noinline)) static ssize_t read(int fd, void *buffer, size_t length) {
    return retry([&] { return ::read(fd, buffer, length); });
}

__attribute__((noinline)) static ssize_t write(int fd, const void *buffer, size_t length) {
    return retry([&] { return ::write(fd, buffer, length); });
}

// Writes all of buffer to a blocking fd. 0, or -1 with errno (EINTR
// retried, by write()).
static int write_all(int fd, const char *buffer, size_t length) {
    while (length > 0) {
        ssize_t n = write(fd, buffer, length);
        if (n < 0) return -1;
        buffer += n;
        length -= size_t(n);
    }
    return 0;
}

static ssize_t pread(int fd, void *buffer, size_t length, off_t offset) {
    return retry([&] { return ::pread(fd, buffer, length, offset); });
}

// Never retried (see above). close(-1) is a no-op that returns 0.
static int close(int fd) {
    if (fd < 0) return 0;
    int saved = errno;
    int rc = ::close(fd);
    if (rc == 0) errno = saved;
    return rc;
}

// openat() with O_CLOEXEC added; dir_fd AT_FDCWD makes it open(). EINTR
// (a FIFO, some network file systems) retried.
static int openat(int dir_fd, const char *path, int flags) {
    return retry([&] { return ::openat(dir_fd, path, flags | O_CLOEXEC); });
}

// A close-on-exec copy of fd at the lowest free number >= lowest.
// Cannot be interrupted.
static int duplicate(int fd, int lowest) { return fcntl(fd, F_DUPFD_CLOEXEC, lowest); }

// Makes target a copy of fd, not close-on-exec: for handing to a program.
// EINTR (Linux documents it) retried.
static int dup2(int fd, int target) {
    return retry([&] { return ::dup2(fd, target); });
}

// Closes every descriptor from lowest up, in a child about to exec
// (Linux 5.9: close_range(); else close() on each number below
// RLIMIT_NOFILE, at most 65536 of them).
static void close_from(int lowest) {
#if defined(__linux__) && defined(SYS_close_range)
    if (syscall(SYS_close_range, lowest, ~0U, 0) == 0) return;
#endif
    rlimit limit;
    long top = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? long(limit.rlim_cur) : 65536;
    for (long fd = lowest; fd < std::min(top, 65536L); fd++) ::close(int(fd));
}

// Set on a descriptor made elsewhere (inherited, or on a system that
// cannot make it so at birth). 0, or -1 with errno; cannot be interrupted.
static int set_close_on_exec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    return flags < 0 ? -1 : fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

// Sets close-on-exec, and O_NONBLOCK on or off. 0, or -1 with errno.
static int set_flags(int fd, bool nonblocking) {
    if (set_close_on_exec(fd) < 0) return -1;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    int wanted = nonblocking ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return wanted == flags ? 0 : fcntl(fd, F_SETFL, wanted);
}

// The descriptor makers, each close-on-exec from birth, none of them
// interruptible but accept_once:
//   socket(domain, type, nonblocking): a socket, nonblocking if asked;
//   socket_pair(fds): a connected pair of nonblocking UNIX stream sockets;
//   pipe(fds): a pipe, nonblocking at both ends;
//   accept_once(fd, ...): one accept() of a blocking connection.
// SOCK_CLOEXEC comes with accept4 and pipe2 (Linux, the BSDs, illumos).
// Where it is missing (macOS), the one fallback: the flags are set straight
// after, which only a thread that forks in between could race.
#ifdef SOCK_CLOEXEC
static int socket(int domain, int type, bool nonblocking = false) {
    return ::socket(domain, type | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
}
static int socket_pair(int fds[2]) {
    return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds);
}
static int pipe(int fds[2]) { return ::pipe2(fds, O_CLOEXEC | O_NONBLOCK); }
static int accept_once(int fd, sockaddr *address, socklen_t *length) {
    return ::accept4(fd, address, length, SOCK_CLOEXEC);
}
#else
static int with_flags(int fd, bool nonblocking) {
    if (fd >= 0 && set_flags(fd, nonblocking) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}
static int pair_with_flags(int rc, int fds[2]) {
    if (rc < 0) return -1;
    if (set_flags(fds[0], true) < 0 || set_flags(fds[1], true) < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    return 0;
}
static int socket(int domain, int type, bool nonblocking = false) {
    return with_flags(::socket(domain, type, 0), nonblocking);
}
static int socket_pair(int fds[2]) { return pair_with_flags(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), fds); }
static int pipe(int fds[2]) { return pair_with_flags(::pipe(fds), fds); }
// A BSD accept() passes the listener's O_NONBLOCK on; with_flags clears it.
static int accept_once(int fd, sockaddr *address, socklen_t *length) {
    return with_flags(::accept(fd, address, length), false);
}
#endif

// Accepts a blocking, close-on-exec connection from a nonblocking listener.
// EINTR retried.
static int accept(int fd, sockaddr *address, socklen_t *length) {
    return retry([&] { return accept_once(fd, address, length); });
}

// connect() for a UNIX socket probe. Passes EINTR up: an interrupted
// connect goes on in the background, so it cannot simply be called again.
static int connect(int fd, const sockaddr *address, socklen_t length) {
    return ::connect(fd, address, length);
}

// EINTR retried.
static pid_t waitpid(pid_t pid, int *status, int options) {
    return retry([&] { return ::waitpid(pid, status, options); });
}

// For the waits: EINTR becomes 0, "nothing ready", with errno kept.
static int nothing_if_interrupted(int n, int saved) {
    if (n >= 0 || errno != EINTR) return n;
    errno = saved;
    return 0;
}

// poll(). A wait: EINTR is 0 (see above); callers loop anyway, and the
// self-pipe in their set tells them what the signal was.
static int poll(pollfd *fds, nfds_t count, int timeout_ms) {
    int saved = errno;
    return nothing_if_interrupted(::poll(fds, count, timeout_ms), saved);
}

// poll() with `mask` as the signal mask for the wait only. Workers keep
// SIGTERM blocked while they serve, so it can never interrupt a handler's
// own system calls, and take it only here, between connections. A wait:
// EINTR is 0. Linux: ppoll(); elsewhere sigprocmask() around poll().
static int poll_with_mask(pollfd *fds, nfds_t count, int timeout_ms, const sigset_t *mask) {
    int saved = errno;
#ifdef __linux__
    timespec ts = {timeout_ms / 1000, long(timeout_ms % 1000) * 1000000};
    int n = ::ppoll(fds, count, timeout_ms < 0 ? nullptr : &ts, mask);
#else
    // Not atomic, and need not be: a signal that lands between the two
    // calls has already put its byte in the self-pipe, which is in fds.
    sigset_t old;
    sigprocmask(SIG_SETMASK, mask, &old);
    int n = ::poll(fds, count, timeout_ms);
    int poll_errno = errno;
    sigprocmask(SIG_SETMASK, &old, nullptr);
    errno = poll_errno;
#endif
    return nothing_if_interrupted(n, saved);
}

static int64_t monotonic_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// semop() that gives up after timeout_ms (-1: wait as long as it takes)
// with EAGAIN. The parent never waits without a bound: a worker may hang,
// or be stopped, while it holds the lock. Linux: semtimedop(); elsewhere
// IPC_NOWAIT tries a millisecond apart. EINTR retried until the deadline.
static int semop(int id, sembuf *operations, size_t count, int timeout_ms = -1) {
    int saved = errno;
    int rc;
    int64_t deadline = monotonic_ms() + timeout_ms;
    for (;;) {
        if (timeout_ms < 0) {
            rc = ::semop(id, operations, count);
        } else {
#ifdef __linux__
            int64_t left = std::max<int64_t>(0, deadline - monotonic_ms());
            timespec ts = {time_t(left / 1000), long(left % 1000) * 1000000};
            rc = ::semtimedop(id, operations, count, &ts);
#else
            for (size_t i = 0; i < count; i++) operations[i].sem_flg |= IPC_NOWAIT;
            rc = ::semop(id, operations, count);
            if (rc < 0 && errno == EAGAIN && monotonic_ms() < deadline) {
                ::poll(nullptr, 0, 1);
                errno = EINTR;  // go round again
            }
#endif
            if (rc < 0 && errno == EINTR && monotonic_ms() >= deadline) errno = EAGAIN;
        }
        if (rc == 0 || errno != EINTR) break;
    }
    if (rc == 0) errno = saved;
    return rc;
}

union semun {
    int val;
    semid_ds *buf;
    unsigned short *array;
};

// recv() that returns at once unless `wait`: -1 with EAGAIN when nothing
// has come (a wait under SO_RCVTIMEO ends that way too). Passes EINTR up,
// for the caller to look at its clock. Not a socket: a plain read().
static ssize_t receive(int fd, char *buffer, size_t length, bool wait) {
    ssize_t n = ::recv(fd, buffer, length, wait ? 0 : MSG_DONTWAIT);
    if (n < 0 && errno == ENOTSOCK) n = ::read(fd, buffer, length);
    return n;
}

// sendmsg() of count pieces, returning at once unless `wait`; `more` tells
// the kernel (Linux: MSG_MORE) that a sendfile follows at once, so a head
// and its file leave in the same segments instead of the file being held
// back by Nagle until the client's delayed ACK. Passes EINTR up, as
// receive() does. Not a socket: writev().
static ssize_t send_pieces(int fd, iovec *pieces, int count, bool wait, bool more) {
    msghdr message{};
    message.msg_iov = pieces;
    message.msg_iovlen = size_t(count);
    int flags = wait ? 0 : MSG_DONTWAIT;
#ifdef MSG_NOSIGNAL
    flags |= MSG_NOSIGNAL;
#endif
#ifdef MSG_MORE
    if (more) flags |= MSG_MORE;
#else
    (void)more;
#endif
    ssize_t n = ::sendmsg(fd, &message, flags);
    if (n < 0 && errno == ENOTSOCK) n = ::writev(fd, pieces, count);
    return n;
}

/* ---------------------------------------------------------------------------
   Platform features: what Linux (or the build) offers beyond POSIX, each
   behind one #ifdef and each saying what it falls back to elsewhere. The
   EINTR rule above holds here too. */

// Up to N elements in place, more on the heap. What a worker sets up to wait
// on stays off the heap: malloc there would write pages the worker shares
// with the parent (the chunk's, the free lists') and so make them its own.
template <typename T, size_t N> class SmallArray {
public:
    explicit SmallArray(size_t count) : count_(count), data_(count <= N ? local_ : new T[count]()) {}
    SmallArray(const SmallArray &) = delete;
    SmallArray &operator=(const SmallArray &) = delete;
    ~SmallArray() {
        if (data_ != local_) delete[] data_;
    }
    T *data() { return data_; }
    size_t size() const { return count_; }
    T &operator[](size_t i) { return data_[i]; }

private:
    size_t count_;
    T local_[N] = {};
    T *data_;
};

// What a worker waits on between connections: fds[0, listeners) are the
// listeners, the rest its pipes. On Linux an epoll set in which the
// listeners are EPOLLEXCLUSIVE, so a new connection wakes one idle worker
// instead of every one of them (the thundering herd); elsewhere, or when
// epoll is refused, poll_with_mask(), which wakes them all. Either way the
// wait runs under `mask`.
class Waiter {
public:
    PREFORK_COLD Waiter(const int *fds, size_t count, size_t listeners)
        : fds_(count), listeners_(listeners), polled_(count) {
        std::copy(fds, fds + count, fds_.data());
#ifdef __linux__
        epoll_ = epoll_create1(EPOLL_CLOEXEC);
        for (size_t i = listeners_; epoll_ >= 0 && i < fds_.size(); i++)
            if (control(EPOLL_CTL_ADD, i, 0) < 0) drop_epoll();
#endif
        listen(true);
    }
    ~Waiter() { drop_epoll(); }

    // Puts the listeners in the set, or takes them out.
    void listen(bool on) {
#ifdef __linux__
        for (size_t i = 0; epoll_ >= 0 && on != listening_ && i < listeners_; i++) {
            int rc = on ? control(EPOLL_CTL_ADD, i, EPOLLEXCLUSIVE) : control(EPOLL_CTL_DEL, i, 0);
            if (rc < 0 && on && errno == EINVAL) rc = control(EPOLL_CTL_ADD, i, 0);  // before Linux 4.5
            if (rc < 0) drop_epoll();
        }
#endif
        listening_ = on;
    }

    // Waits up to timeout_ms (-1: no limit). Returns the number of ready
    // fds, 0 on timeout or signal (a wait: EINTR is 0), -1 on error;
    // ready[i] is set for fds[i].
    int wait(int timeout_ms, const sigset_t *mask, char *ready) {
        std::fill(ready, ready + fds_.size(), 0);
#ifdef __linux__
        if (epoll_ >= 0) {
            epoll_event events[8];
            int saved = errno;
            int n = nothing_if_interrupted(epoll_pwait(epoll_, events, 8, timeout_ms, mask), saved);
            for (int i = 0; i < n; i++) ready[events[i].data.u32] = 1;
            return n;
        }
#endif
        nfds_t count = 0;
        for (size_t i = listening_ ? 0 : listeners_; i < fds_.size(); i++)
            polled_[count++] = pollfd{fds_[i], POLLIN, 0};
        int n = poll_with_mask(polled_.data(), count, timeout_ms, mask);
        for (nfds_t i = 0; n > 0 && i < count; i++)
            if (polled_[i].revents) ready[i + (listening_ ? 0 : listeners_)] = 1;
        return n;
    }

private:
#ifdef __linux__
    int control(int op, size_t i, uint32_t flags) {
        epoll_event event{};
        event.events = EPOLLIN | flags;
        event.data.u32 = uint32_t(i);
        return epoll_ctl(epoll_, op, fds_[i], &event);
    }
#endif
    void drop_epoll() {
        close(epoll_);
        epoll_ = -1;
    }

    SmallArray<int, 8> fds_;
    size_t listeners_;
    bool listening_ = false;
    int epoll_ = -1;
    SmallArray<pollfd, 8> polled_;
};

// Lets the kernel hold a new connection until its first bytes arrive, for
// up to `seconds` (rounded up; 0 = off). Linux: TCP_DEFER_ACCEPT;
// elsewhere nothing (0): the worker's read timeout covers a silent client.
static int defer_accept(int fd, double seconds) {
#if defined(__linux__) && defined(TCP_DEFER_ACCEPT)
    int whole = !(seconds > 0) ? 0 : seconds >= 1e6 ? 1000000 : int(std::ceil(seconds));
    return whole > 0 ? setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &whole, sizeof whole) : 0;
#else
    (void)fd;
    (void)seconds;
    return 0;
#endif
}

// A datagram socket for systemd's NOTIFY_SOCKET ("/path" or "@abstract"),
// with *to and *length set; -1 when unset or unusable. Plain POSIX, but
// only systemd sets the variable: elsewhere there is nothing to open.
static int notify_open(sockaddr_un *to, socklen_t *length) {
    const char *path = getenv("NOTIFY_SOCKET");
    size_t size = path ? strlen(path) : 0;
    if (size < 2 || size >= sizeof to->sun_path || (path[0] != '/' && path[0] != '@')) return -1;
    memset(to, 0, sizeof *to);
    to->sun_family = AF_UNIX;
    memcpy(to->sun_path, path, size);
    if (path[0] == '@') to->sun_path[0] = '\0';  // the abstract namespace (Linux)
    *length = socklen_t(offsetof(sockaddr_un, sun_path) + size);
    return socket(AF_UNIX, SOCK_DGRAM);
}

// Sends text to the notify socket; best effort, errors are dropped. EINTR
// retried.
static void notify_send(int fd, const sockaddr_un &to, socklen_t length, const std::string &text) {
    int flags = 0;
#ifdef MSG_NOSIGNAL
    flags = MSG_NOSIGNAL;
#endif
    const sockaddr *address = reinterpret_cast<const sockaddr *>(&to);
    (void)retry([&] { return ::sendto(fd, text.data(), text.size(), flags, address, length); });
}

// True when the parent that forked us is gone. On Linux the kernel says so
// with the parent-death signal (see below), which shows up as a pending
// SIGTERM, so no system call is spent here; elsewhere, getppid().
static bool parent_gone(pid_t parent) {
#ifdef __linux__
    (void)parent;
    return false;
#else
    return getppid() != parent;
#endif
}

// Makes the calling process a batch one (Linux SCHED_BATCH) if it has the
// normal policy; one an operator chose (chrt) stays. Its wake-ups then do not
// preempt the process running on the core: a worker woken by a request waits
// until the worker in the middle of its own request blocks, which costs one
// context switch instead of two, and the waker no interrupt. Elsewhere
// nothing.
static void use_batch_scheduling() {
#if defined(__linux__) && defined(SCHED_BATCH)
    sched_param none{};
    if (sched_getscheduler(0) == SCHED_OTHER) sched_setscheduler(0, SCHED_BATCH, &none);
#endif
}

// Asks the kernel to send `signal` when the parent dies (Linux:
// PR_SET_PDEATHSIG); elsewhere nothing. The life pipe tells idle workers on
// every system; a busy worker sees this signal pending, or its new parent
// pid, through Worker::stopping().
static void set_parent_death_signal(int signal) {
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, signal);
#else
    (void)signal;
#endif
}

// Calls f(id, ds) for every semaphore set in the system (Linux: SEM_INFO
// and SEM_STAT walk the kernel's table); elsewhere there is no portable way
// and nothing is visited.
template <class F> static void for_each_semaphore_set(F f) {
#ifdef __linux__
    seminfo info;
    semun arg;
    arg.buf = reinterpret_cast<semid_ds *>(&info);
    int highest = semctl(0, 0, SEM_INFO, arg);
    for (int index = 0; index <= highest; index++) {
        semid_ds ds;
        arg.buf = &ds;
        int id = semctl(index, 0, SEM_STAT, arg);
        if (id >= 0) f(id, ds);
    }
#else
    (void)f;
#endif
}

// Opens `path` (relative) beneath the directory dir_fd, refusing every way
// out of it: "..", absolute paths, and symlinks, none of which is followed
// (even one that stays inside could name a dotfile). Linux resolves with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS); elsewhere, or on a kernel
// without openat2, one component at a time with O_NOFOLLOW. The fd is
// close-on-exec; EINTR retried. Compiled for size: the file cache opens a
// file once a second.
PREFORK_COLD static int open_beneath(int dir_fd, const char *path, int flags) {
#if defined(__linux__) && defined(SYS_openat2)
    open_how how;
    memset(&how, 0, sizeof how);
    how.flags = uint64_t(flags | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
    int fd = retry([&] { return int(syscall(SYS_openat2, dir_fd, path, &how, sizeof how)); });
    if (fd >= 0 || errno != ENOSYS) return fd;
#endif
    int current = dir_fd;
    std::string component;
    for (const char *p = path;;) {
        const char *slash = strchr(p, '/');
        component.assign(p, slash ? size_t(slash - p) : strlen(p));
        if (component == "..") {
            if (current != dir_fd) close(current);
            errno = EXDEV;
            return -1;
        }
        const char *name = component.empty() ? "." : component.c_str();
        int next = openat(current, name, (slash ? O_RDONLY | O_DIRECTORY : flags) | O_NOFOLLOW);
        struct stat st;  // a symlink is ELOOP, as openat2 says, even where O_DIRECTORY said ENOTDIR
        if (next < 0 && errno == ENOTDIR && fstatat(current, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            errno = ELOOP;
        if (current != dir_fd) close(current);
        if (next < 0 || !slash) return next;
        current = next;
        p = slash + 1;
    }
}

// Sends up to length bytes of in_fd from offset (Linux: sendfile; elsewhere
// pread then write, through a 64 KiB buffer): the bytes sent, 0 if the file
// ends first, or -1 with errno (EAGAIN when the socket's send timeout ran
// out first). EINTR retried.
static ssize_t sendfile_some(int out_fd, int in_fd, uint64_t offset, uint64_t length) {
#ifdef __linux__
    size_t most = size_t(std::min<uint64_t>(length, 1 << 30));
    return retry([&] {
        off_t at = off_t(offset);
        return ::sendfile(out_fd, in_fd, &at, most);
    });
#else
    char buffer[65536];
    ssize_t n = pread(in_fd, buffer, size_t(std::min<uint64_t>(length, sizeof buffer)), off_t(offset));
    return n <= 0 ? n : write(out_fd, buffer, size_t(n));
#endif
}

// Runs f. When the library is built with exceptions, one escaping f is
// caught: false, with *what set to its what() (or a note that it was not a
// std::exception). Built with -fno-exceptions this is a plain call.
template <class F> static bool run_guarded(F &&f, std::string *what) {
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    try {
        f();
        return true;
    } catch (const std::exception &e) {
        *what = e.what();
    } catch (...) {
        *what = "an exception that is not a std::exception";
    }
    return false;
#else
    (void)what;
    f();
    return true;
#endif
}

}  // namespace sys

static int64_t now_ms() { return sys::monotonic_ms(); }

template <class T> static T load(const T &value) {
    T out;
    __atomic_load(&value, &out, __ATOMIC_ACQUIRE);
    return out;
}

template <class T> static void store(T &target, T value) {
    __atomic_store(&target, &value, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------------------
   Self-pipe and signals. A handler is a top half only: it saves errno,
   writes the signal number as one byte, restores errno. The pipe's write end
   is this file's only global; right after fork, with every signal blocked,
   a worker puts a pipe of its own under the same descriptor number, so no
   byte meant for one process can land in the other's pipe. */
static int signal_pipe_write_end = -1;

// The handler. sys::write is async-signal-safe. The pipe is nonblocking: a
// full pipe drops the byte rather than hang the handler, and the bytes
// already in it wake the loop.
static void on_signal(int signal) {
    int saved = errno;
    unsigned char byte = (unsigned char)signal;
    if (signal_pipe_write_end >= 0) (void)sys::write(signal_pipe_write_end, &byte, 1);
    errno = saved;
}

static const int parent_signals[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGTTIN,
                                     SIGTTOU, SIGUSR1, SIGUSR2, SIGPIPE};

// Installs handler with every signal blocked while it runs, and
// SA_RESTART, so most calls a signal lands in go on; the kernel never
// restarts the waits or a socket call under a timeout, and the wrappers
// say what those do with EINTR.
static int set_disposition(int signal, void (*handler)(int), struct sigaction *old = nullptr) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    sigfillset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    return sigaction(signal, &action, old);
}

// Reads every pending byte, until the nonblocking pipe says EAGAIN (or
// EOF); calls f(byte) for each.
template <class F> static void drain_pipe(int fd, F f) {
    unsigned char bytes[64];
    for (;;) {
        ssize_t n = sys::read(fd, bytes, sizeof bytes);
        if (n <= 0) return;
        for (ssize_t i = 0; i < n; i++) f(bytes[i]);
    }
}

/* ---------------------------------------------------------------------------
   Logging and options. */
const char *log_level_name(LogLevel level) {
    switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::notice: return "notice";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
    }
    return "?";
}

void log_to_stderr(LogLevel level, const char *message) {
    char line[1200];
    time_t t = time(nullptr);
    struct tm tm;
    localtime_r(&t, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02d %02d:%02d:%02d [%s] [pid %d] %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, log_level_name(level), int(getpid()), message);
    if (n < 0) return;
    if (size_t(n) >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    (void)sys::write_all(2, line, size_t(n));
}

LogFn log_to_stderr_at(LogLevel least) {
    return [least](LogLevel level, const char *message) {
        if (level >= least) log_to_stderr(level, message);
    };
}

// fmt with args, in `line` when it fits (no malloc), else in *spill (long
// lines, a big scoreboard, get the room they need). Returns the text.
static const char *format_to(char (&line)[512], std::string *spill, const char *fmt, va_list args) {
    va_list again;
    va_copy(again, args);
    int n = vsnprintf(line, sizeof line, fmt, args);
    const char *text = line;
    if (n < 0) {
        line[0] = '\0';
    } else if (size_t(n) >= sizeof line) {
        spill->resize(size_t(n) + 1);
        vsnprintf(&(*spill)[0], spill->size(), fmt, again);
        spill->resize(size_t(n));
        text = spill->c_str();
    }
    va_end(again);
    return text;
}

static std::string format(const char *fmt, va_list args) {
    char line[512];
    std::string out;
    const char *text = format_to(line, &out, fmt, args);
    if (text == line) out = line;
    return out;
}

static std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static std::string format(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    std::string s = format(fmt, args);
    va_end(args);
    return s;
}

PREFORK_COLD std::string check_options(Options &o, std::vector<std::string> *notes) {
    struct IntRule { const char *name; long long value, min, max; };
    const IntRule ints[] = {
        {"start_servers", o.start_servers, 0, 100000},
        {"min_spare_servers", o.min_spare_servers, 1, 100000},
        {"max_spare_servers", o.max_spare_servers, 1, 100000},
        {"max_clients", o.max_clients, 1, 100000},
        {"listen_backlog", o.listen_backlog, 1, 1 << 20},
        {"max_requests_per_child", o.max_requests_per_child, 0, LONG_MAX / 2},
        {"max_requests_jitter", o.max_requests_jitter, 0, LONG_MAX / 2},
        {"max_rss_kib", o.max_rss_kib, 0, LONG_MAX},
        {"max_clients_per_ip", o.max_clients_per_ip, 0, 100000},
    };
    for (const IntRule &r : ints)
        if (r.value < r.min || r.value > r.max)
            return format("%s must be between %lld and %lld (got %lld)", r.name, r.min, r.max, r.value);
    struct TimeRule { const char *name; double value; double min; };
    const TimeRule times[] = {
        {"timeout", o.timeout, 0},
        {"kill_grace", o.kill_grace, 0},
        {"graceful_timeout", o.graceful_timeout, 0},
        {"defer_accept", o.defer_accept, 0},
        {"ipc_retry_interval", o.ipc_retry_interval, 0.01},
        {"upgrade_timeout", o.upgrade_timeout, 0.01},
    };
    for (const TimeRule &r : times)
        if (!std::isfinite(r.value) || r.value < r.min || r.value > 1e6)
            return format("%s must be a finite number of seconds from %g to 1000000 (got %g)",
                          r.name, r.min, r.value);
    if (o.max_requests_jitter > 0 && o.max_requests_per_child == 0)
        return "max_requests_jitter needs max_requests_per_child";

    // Two normalisations, each described in *notes, and nothing else.
    if (o.start_servers > o.max_clients) {
        if (notes)
            notes->push_back(format("start_servers %d is above max_clients %d; starting %d",
                                    o.start_servers, o.max_clients, o.max_clients));
        o.start_servers = o.max_clients;
    }
    if (o.max_spare_servers < o.min_spare_servers) {
        if (notes)
            notes->push_back(format("max_spare_servers %d is below min_spare_servers %d; using %d",
                                    o.max_spare_servers, o.min_spare_servers,
                                    o.min_spare_servers + 1));
        o.max_spare_servers = o.min_spare_servers + 1;
    }
    return "";
}

/* ---------------------------------------------------------------------------
   Scoreboard. One segment: a header, then max_clients slots. Workers write
   their own slot without the lock (single writer, atomic fields); the lock
   orders the rarer whole-board operations: the parent claiming or freeing a
   slot (folding a dead worker's counters into the totals) against anyone
   taking a snapshot, so a snapshot never counts a worker twice or not at
   all. Nobody waits for the lock without a bound: a worker may hang or be
   stopped while holding it, and SEM_UNDO only helps once it dies. Past the
   bound the work goes ahead unlocked, and at worst one snapshot is off.

   The semaphore set also says whether its creator lives: the creator holds
   the `alive` semaphore at 1 with SEM_UNDO, so the kernel drops it to 0
   when the creator dies, even by SIGKILL, and a later start can tell a set
   left behind from one in use without trusting pids (which are reused, and
   mean nothing across PID namespaces that share an IPC namespace). */
static_assert(std::is_trivially_copyable<Slot>::value, "slots live in shared memory");

struct Shared {
    uint32_t magic;
    int32_t slot_count;
    // Idle workers, starting ones included (they will be idle soon), kept by
    // deltas only: +1 at spawn; -1 when a worker turns busy, pauses or leaves
    // idle to exit; +1 when it turns idle again or resumes. A slot's
    // `counted` flag says whether its worker is in the count, so reaping
    // takes out one that died counted. A worker stores its new state first
    // and changes the count second: a parent woken by the count must find
    // the state that caused it, or it would count a busy worker as idle and
    // nothing would wake it again. The count only decides when to wake the
    // parent, which counts the slots itself.
    int32_t idle_hint;
    int32_t live;        // live workers, stored by the parent
    int32_t min_spare;   // current spare bounds (SIGTTIN/SIGTTOU move them)
    int32_t max_spare;
    int32_t max_clients;
    uint32_t generation;
    uint32_t draining;
    uint32_t wake_pending;  // a wake byte is on its way; the parent clears it
    uint32_t excess_seen;   // the parent already times an idle excess: no wake for more
    int64_t started_ms;
    int64_t drain_deadline_ms;  // stored before draining: when the drain's SIGKILL comes
    uint64_t retired_connections, retired_requests, retired_bytes;
};
static_assert(std::is_trivially_copyable<Shared>::value, "the header lives in shared memory");

static const uint32_t shared_magic = 0x70666b31;  // "pfk1"
enum { sem_lock, sem_alive, sem_marker, sem_pid_high, sem_pid_low, sem_count };
static const unsigned short semaphore_marker = 0x5046;  // "PF"
static const int lock_wait_ms = 50;

static Slot *slots_of(Shared *shared) { return reinterpret_cast<Slot *>(shared + 1); }

// After the slots, one stop order per slot: what the parent tells a worker
// as it sends it SIGTERM alone (a retirement, a restart, the watchdog), the
// reason and when SIGKILL follows (Worker::stop_reason). One word, so a
// worker never reads one order's reason with another's deadline; 0 is none.
// A drain concerns them all, and goes through the header instead.
static uint64_t *stop_orders_of(Shared *shared) {
    return reinterpret_cast<uint64_t *>(slots_of(shared) + shared->slot_count);
}

static uint64_t stop_order(StopReason reason, int64_t kill_at_ms) {
    return uint64_t(kill_at_ms) << 8 | uint64_t(reason);
}

// The board's header, for the pool and its workers; users see slots only.
struct detail::Access {
    static Shared *shared(Scoreboard &board) { return board.shared_; }
};

PREFORK_COLD static std::string describe_ipc_error(const char *call, int err) {
    const char *why = strerror(err);
    if (!strcmp(call, "semget") && err == ENOSPC)
        return "semget: no semaphore set left: the kernel limit SEMMNI (sets) or SEMMNS "
               "(semaphores) is reached, see /proc/sys/kernel/sem; this is not about disk space";
    if (!strcmp(call, "shmget") && err == ENOSPC)
        return "shmget: no shared memory segment left: the kernel limit SHMMNI (segments) or "
               "SHMALL (pages) is reached, see /proc/sys/kernel/shmmni and shmall; this is not "
               "about disk space";
    if (!strcmp(call, "shmget") && err == EINVAL)
        return "shmget: the scoreboard size is outside the kernel limits SHMMIN/SHMMAX, see "
               "/proc/sys/kernel/shmmax";
    if (err == ENOMEM) return format("%s: out of memory for System V IPC", call);
    return format("%s: %s", call, why);
}

// Removes semaphore sets that a parent killed with SIGKILL left behind: ours
// by shape and marker, created by our user, with nobody holding `alive`.
PREFORK_COLD static void remove_stale_semaphores(const LogFn &log) {
    sys::for_each_semaphore_set([&](int id, const semid_ds &ds) {
        if (ds.sem_nsems != sem_count || ds.sem_perm.cuid != geteuid()) return;
        unsigned short values[sem_count];
        sys::semun arg;
        arg.array = values;
        if (semctl(id, 0, GETALL, arg) < 0 || values[sem_marker] != semaphore_marker ||
            values[sem_alive] != 0)
            return;
        int creator = (values[sem_pid_high] << 15) | values[sem_pid_low];
        if (semctl(id, 0, IPC_RMID) == 0 && log)
            log(LogLevel::notice,
                format("removed semaphore set %d left by dead parent %d", id, creator).c_str());
    });
}

static int semaphore_step(int id, int which, short delta, int timeout_ms) {
    sembuf op;
    op.sem_num = (unsigned short)which;
    op.sem_op = delta;
    op.sem_flg = SEM_UNDO;
    return sys::semop(id, &op, 1, timeout_ms);
}

Scoreboard::~Scoreboard() { destroy(); }

PREFORK_COLD int Scoreboard::create(int slots, std::string *error, const LogFn &log) {
    remove_stale_semaphores(log);
    size_t size = sizeof(Shared) + size_t(slots) * (sizeof(Slot) + sizeof(uint64_t));  // stop orders last
    int shm = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);
    if (shm < 0) {
        *error = describe_ipc_error("shmget", errno);
        return -1;
    }
    void *address = shmat(shm, nullptr, 0);
    int shmat_errno = errno;
    // Marked for removal at once: it lives exactly as long as some process
    // (the parent or a worker) is attached, so no exit path can leak it.
    shmctl(shm, IPC_RMID, nullptr);
    if (address == (void *)-1) {
        *error = describe_ipc_error("shmat", shmat_errno);
        return -1;
    }
    int sem = semget(IPC_PRIVATE, sem_count, IPC_CREAT | 0600);
    if (sem < 0) {
        *error = describe_ipc_error("semget", errno);
        shmdt(address);
        return -1;
    }
    // The marker goes in last: until `alive` is held, a sweep elsewhere must
    // not take this set for a dead one.
    pid_t self = getpid();
    unsigned short values[sem_count];
    values[sem_lock] = 1;
    values[sem_alive] = 0;
    values[sem_marker] = 0;
    values[sem_pid_high] = (unsigned short)((self >> 15) & 0x7fff);
    values[sem_pid_low] = (unsigned short)(self & 0x7fff);
    sys::semun arg;
    arg.array = values;
    const char *failed = nullptr;
    if (semctl(sem, 0, SETALL, arg) < 0) failed = "semctl";
    else if (semaphore_step(sem, sem_alive, 1, -1) < 0) failed = "semop";
    if (!failed) {
        arg.val = semaphore_marker;
        if (semctl(sem, sem_marker, SETVAL, arg) < 0) failed = "semctl";
    }
    if (failed) {
        *error = describe_ipc_error(failed, errno);
        semctl(sem, 0, IPC_RMID);
        shmdt(address);
        return -1;
    }
    memset(address, 0, size);
    shared_ = static_cast<Shared *>(address);
    shared_->magic = shared_magic;
    shared_->slot_count = slots;
    shared_->started_ms = now_ms();
    semaphore_id_ = sem;
    creator_ = self;
    return 0;
}

void Scoreboard::destroy() {
    if (semaphore_id_ >= 0 && creator_ == getpid()) semctl(semaphore_id_, 0, IPC_RMID);
    semaphore_id_ = -1;
    if (shared_) shmdt(shared_);
    shared_ = nullptr;
}

int Scoreboard::slot_count() const { return shared_ ? shared_->slot_count : 0; }

Slot &Scoreboard::slot(int index) { return slots_of(shared_)[index]; }

int Scoreboard::lock(int timeout_ms) { return semaphore_step(semaphore_id_, sem_lock, -1, timeout_ms); }
int Scoreboard::unlock() { return semaphore_step(semaphore_id_, sem_lock, 1, -1); }

// Copies a slot with a consistent request[]: the writer makes request_seq
// odd while it writes (see Worker::count_request), so a reader retries
// until it sees the same even value on both sides of its copy.
static void copy_slot(const Slot &from, Slot *to) {
    for (int attempt = 0; attempt < 100; attempt++) {
        uint32_t before = load(from.request_seq);
        memcpy(to, &from, sizeof *to);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (!(before & 1) && __atomic_load_n(&from.request_seq, __ATOMIC_RELAXED) == before) break;
    }
    to->request[sizeof to->request - 1] = '\0';
}

PREFORK_COLD Snapshot Scoreboard::snapshot() {
    Snapshot s;
    if (!shared_) return s;
    bool locked = lock(lock_wait_ms) == 0;
    s.now_ms = now_ms();
    s.uptime_ms = s.now_ms - shared_->started_ms;
    s.generation = load(shared_->generation);
    s.connections = shared_->retired_connections;
    s.requests = shared_->retired_requests;
    s.bytes = shared_->retired_bytes;
    s.slots.resize(size_t(shared_->slot_count));
    for (int i = 0; i < shared_->slot_count; i++) copy_slot(slots_of(shared_)[i], &s.slots[size_t(i)]);
    if (locked) unlock();
    for (const Slot &slot : s.slots) {
        if (slot.state == SlotState::free) continue;
        s.connections += slot.connections;
        s.requests += slot.requests;
        s.bytes += slot.bytes;
        switch (slot.state) {
        case SlotState::starting: s.starting++; break;
        case SlotState::idle: s.idle++; break;
        case SlotState::busy: s.busy++; break;
        case SlotState::exiting: s.exiting++; break;
        case SlotState::free: break;
        }
    }
    return s;
}

char Snapshot::letter(const Slot &slot) {
    switch (slot.state) {
    case SlotState::free: return '.';
    case SlotState::starting: return 'S';
    case SlotState::idle: return '_';
    case SlotState::busy: return slot.activity ? slot.activity : 'W';
    case SlotState::exiting: return 'G';
    }
    return '?';
}

PREFORK_COLD std::string Snapshot::render() const {
    std::string out = format("gen %u: %d busy, %d idle, %d starting, %d exiting; %llu connections, "
                             "%llu requests\n",
                             generation, busy, idle, starting, exiting,
                             (unsigned long long)connections, (unsigned long long)requests);
    for (const Slot &slot : slots) out += letter(slot);
    return out;
}

/* ---------------------------------------------------------------------------
   Server state, split by lifetime into the structs below: what the program
   sets up before run() (Config), what run() creates and tears down
   (Resources, inherited by every worker), the pool's bookkeeping (Pool,
   parent only), systemd notification (Notifier), the two sides of a binary
   upgrade (OutgoingUpgrade, IncomingUpgrade), and a worker's own state
   (WorkerState), which reads the first two and never the parent's pool. */
struct Listener {
    int fd = -1;
    int port = 0;
    std::string address;
    std::string unix_path;  // set when we own the socket file (remove it at the end)
    bool unclaimed = false; // inherited, and no listen() has named it yet
    bool file_handed = false;  // inherited with its socket file: ours once we take over
    bool ours = false;      // bound by us (or by the old parent of our upgrade), not passed by a manager
};

// A connection the parent took from the listen queue as a graceful stop
// began, for a drain worker to serve (see close_the_door); the worker asks
// the socket for its peer.
struct Accepted {
    int fd;
    int listener;
};

// Set by the program before run(). run() only moves the spare bounds
// (SIGTTIN, SIGTTOU) and closes the listeners at a stop.
struct Config {
    Options options;
    ConnectionHandler handler;
    ConnectionHandler refusal;     // max_clients_per_ip; null: close
    std::function<void()> reopen;  // SIGUSR1
    std::function<void()> restart; // SIGHUP, before the new generation
    std::function<bool()> ready;   // once the pool is first up
    std::vector<std::string> upgrade_command;  // SIGUSR2 runs it; empty: off
    std::vector<InitHook> hooks;
    LogFn log;
    std::vector<Listener> listeners;
};

// Created by run() and gone when it returns; a worker inherits them.
struct Resources {
    int signal_pipe[2] = {-1, -1};
    int wake_pipe[2] = {-1, -1};   // workers -> parent: "idle workers ran low"
    int life_pipe[2] = {-1, -1};   // only the parent holds the write end
    Scoreboard board;
    Shared *shared = nullptr;      // the board's header
    pid_t parent_pid = 0;
};

// A worker as the parent sees it. running -> stopping (SIGTERM sent) ->
// killed (SIGKILL sent); the slot is freed when it is reaped.
enum class ChildState : uint8_t { running, stopping, killed };

struct Child {
    pid_t pid = 0;  // 0: the slot is free
    ChildState state = ChildState::running;
    bool timed_out = false;   // stopped by the watchdog
    uint32_t generation = 0;
    int64_t spawned_ms = 0;
    int64_t kill_at_ms = 0;   // SIGKILL deadline once stopping (0: none of its own)
};

enum class Phase { running, draining, stopping };

// Deaths while serving, logged a few a second (see log_death_while_serving).
struct CrashLog {
    int64_t window_start_ms = 0;
    int logged = 0;    // lines in this window
    int unlogged = 0;  // deaths counted but not logged one by one
};

// The pool's bookkeeping; only the parent reads it.
struct Pool {
    std::vector<Child> children;  // indexed by slot
    int live = 0;
    Phase phase = Phase::running;
    uint32_t generation = 1;
    int ramp_target = 0;          // start this many of the current generation
    int64_t drain_deadline_ms = 0;
    bool drain_kill_sent = false;
    int64_t next_retire_ms = 0;
    int64_t excess_since_ms = 0;  // since when idle workers exceed max spare
    int64_t spawn_not_before_ms = 0;
    int64_t last_failure_ms = 0;
    int failures = 0;             // workers in a row that died young
    CrashLog crash_log;
    int64_t next_dump_ms = 0;
    int64_t next_deadline_ms = 0; // computed by each pass
    bool was_ready = false;       // the ready hook ran
    std::vector<Accepted> backlog;  // taken from the queue at a graceful stop, not yet handed out
    int result = 0;               // what run() returns
};

// systemd's NOTIFY_SOCKET (Options::notify_systemd).
struct Notifier {
    int fd = -1;
    sockaddr_un to{};
    socklen_t length = 0;
    uint32_t ready_generation = 0;  // the generation READY=1 was sent for
    int64_t status_sent_ms = 0;
    std::string status_sent;
};

// The binary upgrade from each side; see the "Binary upgrade" section for
// the transitions.
enum class Outgoing : uint8_t { none, waiting, handed_over, stopping, killed };
enum class Incoming : uint8_t { none, starting, told_ready, cut_off };

// The old parent's side: the new parent is its child.
struct OutgoingUpgrade {
    Outgoing state = Outgoing::none;
    pid_t pid = 0;             // the new parent, until reaped
    int channel = -1;          // our end of the socket pair, while waiting
    int64_t deadline_ms = 0;   // ready by then, while waiting
    int64_t kill_at_ms = 0;    // SIGKILL then, while stopping
};

// The new parent's side: started by an old parent that waits for it.
struct IncomingUpgrade {
    Incoming state = Incoming::none;
    int fd = -1;               // our end of the old parent's socket pair
};

// A worker's own state: its slot, its connection, its way out. Worker is
// the handle a handler gets.
struct detail::WorkerState {
    const Config *config = nullptr;
    Resources *run = nullptr;
    bool is_child = false;
    int slot = -1;
    uint32_t generation = 0;
    std::atomic<bool> listening{true};
    bool stop = false;
    bool told_to_stop = false;         // stopping() saw SIGTERM or the parent's death
    int64_t signals_checked_ms = -1000;  // when stopping() last asked the kernel
    uint64_t served = 0;
    uint64_t limit = 0;   // connections before recycling, 0 = none
    int signal_read_end = -1;
    sockaddr_storage peer{};
    socklen_t peer_length = 0;
    int listener = -1;
    Worker handle{this};

    void logf(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
};

// What a worker writes of it after fork (the parent-only descriptors it
// closes, its own state) lies together, from upgrade to worker: its copy
// of this struct then costs it one page where it could cost two.
struct detail::ServerState {
    Config config;
    OutgoingUpgrade upgrade;    // an upgrade this parent started
    IncomingUpgrade takeover;   // the upgrade that started this parent
    Resources run;
    detail::WorkerState worker;
    Pool pool;
    Notifier notifier;
    struct sigaction saved_actions[sizeof parent_signals / sizeof parent_signals[0]];  // restored by run()
    std::string error;

    void logf(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    int fail(const std::string &message) {
        error = message;
        return -1;
    }
};

// A line that fits is formatted on the stack: the parent logs right after
// each fork, and a malloc there would write heap pages (the free lists')
// the workers still share with it, each of which would then count a copy
// of its own.
static void vlog(const LogFn &log, LogLevel level, const char *fmt, va_list args) {
    if (!log) return;
    char line[512];
    std::string spill;
    log(level, format_to(line, &spill, fmt, args));
}

void detail::WorkerState::logf(LogLevel level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vlog(config->log, level, fmt, args);
    va_end(args);
}

void detail::ServerState::logf(LogLevel level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vlog(config.log, level, fmt, args);
    va_end(args);
}

using detail::ServerState;
using detail::WorkerState;

// True in the new parent of an upgrade until the old parent lets go.
static bool taking_over(const ServerState &s) { return s.takeover.state != Incoming::none; }

/* ---------------------------------------------------------------------------
   Listeners, bound in the calling process before run(). */
// "HOST:PORT", "[V6]:PORT" or "unix:PATH" for a bound address of `length`
// bytes, and its port (0 for UNIX sockets).
static std::string describe_address(const sockaddr *address, socklen_t length, int *port) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (address->sa_family == AF_INET) {
        const sockaddr_in *in = reinterpret_cast<const sockaddr_in *>(address);
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        *port = ntohs(in->sin_port);
        return format("%s:%d", host, *port);
    }
    if (address->sa_family == AF_INET6) {
        const sockaddr_in6 *in6 = reinterpret_cast<const sockaddr_in6 *>(address);
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        *port = ntohs(in6->sin6_port);
        return format("[%s]:%d", host, *port);
    }
    if (address->sa_family == AF_UNIX) {
        *port = 0;
        const sockaddr_un *un = reinterpret_cast<const sockaddr_un *>(address);
        size_t room = length > offsetof(sockaddr_un, sun_path) ? length - offsetof(sockaddr_un, sun_path) : 0;
        return "unix:" + std::string(un->sun_path, strnlen(un->sun_path, std::min(room, sizeof un->sun_path)));
    }
    *port = 0;
    return "?";
}

// Splits "PORT", "HOST:PORT", "[V6]:PORT" into host and port. 0 / -1.
PREFORK_COLD static int split_host_port(const std::string &spec, std::string *host, std::string *port) {
    size_t colon;
    if (!spec.empty() && spec[0] == '[') {
        size_t close = spec.find(']');
        if (close == std::string::npos || close + 1 >= spec.size() || spec[close + 1] != ':')
            return -1;
        *host = spec.substr(1, close - 1);
        *port = spec.substr(close + 2);
        return host->empty() ? -1 : 0;
    }
    colon = spec.rfind(':');
    if (colon == std::string::npos) {
        *host = "";
        *port = spec;
    } else {
        *host = spec.substr(0, colon);
        *port = spec.substr(colon + 1);
        if (host->find(':') != std::string::npos) return -1;  // bare IPv6 needs []
    }
    if (port->empty() || port->size() > 5) return -1;
    for (char c : *port)
        if (c < '0' || c > '9') return -1;
    return atoi(port->c_str()) <= 65535 ? 0 : -1;
}

// The UNIX socket address of path. false when the path is empty or too long.
PREFORK_COLD static bool unix_address(const std::string &path, sockaddr_un *address) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof address->sun_path) return false;
    memcpy(address->sun_path, path.c_str(), path.size());
    return true;
}

PREFORK_COLD static int bind_unix(ServerState &s, const std::string &spec, const std::string &path) {
    sockaddr_un address;
    if (!unix_address(path, &address))
        return s.fail(format("cannot listen on %s: the path must be 1 to %zu bytes",
                             spec.c_str(), sizeof address.sun_path - 1));
    struct stat st;
    if (lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return s.fail(format("cannot listen on %s: the path exists and is not a socket",
                                 spec.c_str()));
        // A socket file that refuses connections is what a dead server
        // leaves. Anything else (an answer, or a probe that could not tell)
        // leaves the file alone.
        int probe = sys::socket(AF_UNIX, SOCK_STREAM);
        int rc = probe < 0 ? -1 : sys::connect(probe, reinterpret_cast<sockaddr *>(&address),
                                               sizeof address);
        int err = errno;
        sys::close(probe);
        if (rc == 0)
            return s.fail(format("cannot listen on %s: another server is listening there",
                                 spec.c_str()));
        if (err != ECONNREFUSED)
            return s.fail(format("cannot listen on %s: the socket file exists and probing it "
                                 "failed: %s", spec.c_str(), strerror(err)));
        unlink(path.c_str());
    }
    int fd = sys::socket(AF_UNIX, SOCK_STREAM, true);
    if (fd < 0) return s.fail(format("cannot listen on %s: socket: %s", spec.c_str(), strerror(errno)));
    if (bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) < 0 ||
        ::listen(fd, s.config.options.listen_backlog) < 0 || sys::set_flags(fd, true) < 0) {
        std::string message = format("cannot listen on %s: %s", spec.c_str(), strerror(errno));
        sys::close(fd);
        return s.fail(message);
    }
    Listener listener;
    listener.fd = fd;
    listener.address = spec;
    listener.unix_path = path;
    listener.ours = true;
    s.config.listeners.push_back(listener);
    return 0;
}

// The address "PORT", "HOST:PORT" or "[V6]:PORT" names. 0, or -1 with
// *why set.
PREFORK_COLD static int inet_address(const std::string &spec, sockaddr_storage *out, socklen_t *length,
                        std::string *why) {
    std::string host, port;
    if (split_host_port(spec, &host, &port) < 0) {
        *why = "expected PORT, HOST:PORT, [IPV6]:PORT or unix:PATH with a port from 0 to 65535";
        return -1;
    }
    addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo *found = nullptr;
    const char *node = (host.empty() || host == "*") ? "0.0.0.0" : host.c_str();
    int rc = getaddrinfo(node, port.c_str(), &hints, &found);
    if (rc != 0) {
        *why = gai_strerror(rc);
        return -1;
    }
    memset(out, 0, sizeof *out);
    memcpy(out, found->ai_addr, std::min<size_t>(found->ai_addrlen, sizeof *out));
    *length = std::min<socklen_t>(found->ai_addrlen, sizeof *out);
    freeaddrinfo(found);
    return 0;
}

PREFORK_COLD static int bind_inet(ServerState &s, const std::string &spec) {
    sockaddr_storage address;
    socklen_t length;
    std::string why;
    if (inet_address(spec, &address, &length, &why) < 0)
        return s.fail(format("cannot listen on %s: %s", spec.c_str(), why.c_str()));
    const sockaddr *bound = reinterpret_cast<const sockaddr *>(&address);
    int fd = sys::socket(address.ss_family, SOCK_STREAM, true);
    int one = 1;
    // TCP_NODELAY: responses are written whole, so Nagle can only delay
    // them; Linux copies it to every accepted connection.
    bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
              setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 &&
              (address.ss_family != AF_INET6 ||
               setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0) &&
              bind(fd, bound, length) == 0 && ::listen(fd, s.config.options.listen_backlog) == 0 &&
              sys::set_flags(fd, true) == 0 && sys::defer_accept(fd, s.config.options.defer_accept) == 0;
    int err = errno;
    if (!ok) {
        sys::close(fd);
        int port;
        return s.fail(format("cannot listen on %s: %s", describe_address(bound, length, &port).c_str(),
                             strerror(err)));
    }
    Listener listener;
    listener.fd = fd;
    listener.ours = true;
    s.config.listeners.push_back(listener);
    return 0;
}

// Whether two socket addresses are the same place: family, address and a
// nonzero port, or the same UNIX path.
PREFORK_COLD static bool same_address(const sockaddr_storage &a, socklen_t a_length, const sockaddr_storage &b,
                         socklen_t b_length) {
    if (a.ss_family != b.ss_family) return false;
    if (a.ss_family == AF_INET) {
        const sockaddr_in &x = reinterpret_cast<const sockaddr_in &>(a);
        const sockaddr_in &y = reinterpret_cast<const sockaddr_in &>(b);
        return x.sin_port && x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
    }
    if (a.ss_family == AF_INET6) {
        const sockaddr_in6 &x = reinterpret_cast<const sockaddr_in6 &>(a);
        const sockaddr_in6 &y = reinterpret_cast<const sockaddr_in6 &>(b);
        return x.sin6_port && x.sin6_port == y.sin6_port &&
               memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
    }
    if (a.ss_family == AF_UNIX) {
        int unused;
        std::string x = describe_address(reinterpret_cast<const sockaddr *>(&a), a_length, &unused);
        return x.size() > 5 && x == describe_address(reinterpret_cast<const sockaddr *>(&b), b_length, &unused);
    }
    return false;
}

// An inherited listener already bound where spec points: listen(spec)
// takes it instead of binding again (the old parent of an upgrade still
// holds that address). Null when there is none.
PREFORK_COLD static Listener *inherited_listener(ServerState &s, const std::string &spec) {
    sockaddr_storage wanted;
    socklen_t wanted_length = 0;
    memset(&wanted, 0, sizeof wanted);
    if (spec.compare(0, 5, "unix:") == 0) {
        std::string path = spec.substr(5);
        if (!unix_address(path, reinterpret_cast<sockaddr_un *>(&wanted))) return nullptr;
        wanted_length = socklen_t(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    } else {
        std::string why;
        if (inet_address(spec, &wanted, &wanted_length, &why) < 0) return nullptr;
    }
    for (Listener &l : s.config.listeners) {
        if (!l.unclaimed) continue;
        sockaddr_storage bound;
        socklen_t length = sizeof bound;
        memset(&bound, 0, sizeof bound);
        if (getsockname(l.fd, reinterpret_cast<sockaddr *>(&bound), &length) == 0 &&
            same_address(wanted, wanted_length, bound, length))
            return &l;
    }
    return nullptr;
}

/* ---------------------------------------------------------------------------
   Worker. A worker polls its listeners, its own signal pipe and the life
   pipe (EOF there means the parent is gone), accepts one connection at a
   time, and keeps its slot current. The pool's size is the parent's call,
   but only a worker sees the moments that change it: turning busy may leave
   too few idle workers, turning idle too many. At those moments, and only
   then, a worker wakes the parent with a byte on the wake pipe, so the pool
   follows a burst within milliseconds and the parent otherwise sleeps. */
enum : uint16_t { slot_counted = 1, slot_paused = 2 };

static void set_state(Slot &slot, SlotState to) { store(slot.state, to); }

// One byte per parent pass, however many workers want it: the parent
// clears wake_pending before it looks at the board again.
static void wake_parent(WorkerState &w) {
    if (__atomic_exchange_n(&w.run->shared->wake_pending, 1u, __ATOMIC_ACQ_REL)) return;
    unsigned char byte = 1;
    (void)!sys::write(w.run->wake_pipe[1], &byte, 1);  // EAGAIN: a wake is already queued
}

// Takes this worker out of / puts it into the idle count (Shared::idle_hint),
// at most once each way: the slot's `counted` flag is claimed atomically, so
// a pause from another thread and a busy turn cannot both take it out.
static void leave_idle_count(WorkerState &w, Slot &slot) {
    if (w.config->options.single_process) return;
    if (!(__atomic_fetch_and(&slot.flags, uint16_t(~slot_counted), __ATOMIC_ACQ_REL) & slot_counted)) return;
    Shared *shared = w.run->shared;
    int idle = __atomic_sub_fetch(&shared->idle_hint, 1, __ATOMIC_ACQ_REL);
    if (idle < load(shared->min_spare) && load(shared->live) < shared->max_clients) wake_parent(w);
}

static void join_idle_count(WorkerState &w, Slot &slot) {
    if (w.config->options.single_process) return;
    if (__atomic_fetch_or(&slot.flags, uint16_t(slot_counted), __ATOMIC_ACQ_REL) & slot_counted) return;
    Shared *shared = w.run->shared;
    if (__atomic_add_fetch(&shared->idle_hint, 1, __ATOMIC_ACQ_REL) > load(shared->max_spare) &&
        !load(shared->excess_seen))
        wake_parent(w);
}

static void worker_turns_busy(WorkerState &w, Slot &slot) {
    int64_t now = now_ms();
    store(slot.busy_since_ms, now);
    store(slot.heartbeat_ms, now);
    store(slot.activity, 'W');
    set_state(slot, SlotState::busy);
    leave_idle_count(w, slot);
}

static void worker_turns_idle(WorkerState &w, Slot &slot) {
    store(slot.heartbeat_ms, now_ms());
    store(slot.client_family, uint8_t(0));
    set_state(slot, SlotState::idle);
    if (w.listening.load()) join_idle_count(w, slot);
}

// True when this worker should be replaced after the connection it served.
static bool worker_should_recycle(WorkerState &w) {
    if (w.config->options.single_process) return false;
    if (w.limit && w.served >= w.limit) {
        w.logf(LogLevel::info, "worker served %llu connections (max_requests_per_child); exiting",
               (unsigned long long)w.served);
        return true;
    }
    if (w.config->options.max_rss_kib > 0) {
        rusage usage;
        if (getrusage(RUSAGE_SELF, &usage) == 0 && usage.ru_maxrss > w.config->options.max_rss_kib) {
            w.logf(LogLevel::notice, "worker peak memory %ld KiB is over max_rss_kib %ld; exiting",
                   long(usage.ru_maxrss), w.config->options.max_rss_kib);
            return true;
        }
    }
    return false;
}

// The IP address in a socket address: its family (AF_INET, AF_INET6; 0 for
// any other) and *bytes pointing at it. With `unmap`, an IPv4-mapped IPv6
// address (::ffff:a.b.c.d) is taken as the IPv4 address it carries.
static int ip_address(const sockaddr *address, socklen_t length, bool unmap, const unsigned char **bytes) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (address->sa_family == AF_INET && length >= socklen_t(sizeof(sockaddr_in))) {
        *bytes = reinterpret_cast<const unsigned char *>(&reinterpret_cast<const sockaddr_in *>(address)->sin_addr);
        return AF_INET;
    }
    if (address->sa_family != AF_INET6 || length < socklen_t(sizeof(sockaddr_in6))) return 0;
    *bytes = reinterpret_cast<const sockaddr_in6 *>(address)->sin6_addr.s6_addr;
    if (!unmap || memcmp(*bytes, mapped, 12) != 0) return AF_INET6;
    *bytes += 12;
    return AF_INET;
}

// Writes the client's address into the slot, then counts the busy slots
// that serve the same address, this one included (0 for a client without
// an IP address). Two workers that take the same client at once each see
// the other: the count errs on the side of refusing.
static int busy_for_same_client(WorkerState &w, Slot &mine, const sockaddr_storage &peer) {
    const unsigned char *bytes;
    int found = ip_address(reinterpret_cast<const sockaddr *>(&peer), sizeof peer, true, &bytes);
    if (!found) return 0;
    uint8_t family = uint8_t(found), address[16] = {};
    memcpy(address, bytes, family == AF_INET ? 4 : 16);
    memcpy(mine.client, address, sizeof address);
    __atomic_store_n(&mine.client_family, family, __ATOMIC_SEQ_CST);
    int count = 0;
    for (int i = 0; i < w.run->board.slot_count(); i++) {
        const Slot &other = w.run->board.slot(i);
        if (load(other.state) == SlotState::busy && load(other.client_family) == family &&
            memcmp(other.client, address, sizeof address) == 0)
            count++;
    }
    return count;
}

static void serve_accepted(WorkerState &w, int fd, int listener_index);

// How often a waiting worker reports to the watchdog: a third of its
// timeout, at least every 100 ms; -1 (never) without a watchdog.
static int report_interval_ms(const Options &options) {
    return options.timeout > 0 ? std::max(100, int(options.timeout * 1000 / 3)) : -1;
}

// Reads the worker's signal pipe: a SIGTERM or SIGINT byte means stop; the
// others (a pause's poke; in single_process mode, the parent's signals)
// only woke the wait.
static void take_signals(WorkerState &w) {
    drain_pipe(w.signal_read_end, [&](unsigned char byte) {
        if (byte == SIGTERM || byte == SIGINT) w.stop = true;
    });
}

// Accepts a connection on the listener and serves it. false if there was
// none to accept.
static bool accept_and_serve(WorkerState &w, int listener_index) {
    w.peer_length = sizeof w.peer;
    int fd = sys::accept(w.config->listeners[size_t(listener_index)].fd,
                         reinterpret_cast<sockaddr *>(&w.peer), &w.peer_length);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            w.logf(LogLevel::error, "accept: %s; pausing for 100 ms", strerror(errno));
            sys::poll(nullptr, 0, 100);  // let descriptors or memory come back
        }
        return false;  // EAGAIN: another worker won the race
    }
    serve_accepted(w, fd, listener_index);
    return true;
}

// Serves one connection whose peer is in w.peer, closes it,
// and turns the worker idle (or exiting, when it should be recycled).
static void serve_accepted(WorkerState &w, int fd, int listener_index) {
    Slot &slot = w.run->board.slot(w.slot);
    w.listener = listener_index;
    worker_turns_busy(w, slot);
    bool refused = w.config->options.max_clients_per_ip > 0 &&
                   busy_for_same_client(w, slot, w.peer) > w.config->options.max_clients_per_ip;
    const ConnectionHandler &handler = refused ? w.config->refusal : w.config->handler;
    std::string what;
    if (handler && !sys::run_guarded([&] { handler(w.handle, fd); }, &what)) {
        Slot copy;
        copy_slot(slot, &copy);
        w.logf(LogLevel::error, "the connection handler threw while serving \"%s\": %s; closing the "
               "connection", copy.request, what.c_str());
    }
    sys::close(fd);
    __atomic_add_fetch(&slot.connections, 1, __ATOMIC_RELAXED);
    w.served++;
    if (worker_should_recycle(w)) {
        w.stop = true;
        set_state(slot, SlotState::exiting);
        return;
    }
    worker_turns_idle(w, slot);
}

// The worker loop; returns when the worker should exit. SIGTERM stays
// blocked except inside the poll, so it never interrupts a handler's own
// system calls (poll and nanosleep would fail with EINTR even under
// SA_RESTART); a handler sees it pending through Worker::stopping().
static void worker_loop(WorkerState &w) {
    const size_t listeners = w.config->listeners.size();
    sys::SmallArray<int, 8> fds(listeners + 1 + (w.run->life_pipe[0] >= 0));
    for (size_t i = 0; i < listeners; i++) fds[i] = w.config->listeners[i].fd;
    fds[listeners] = w.signal_read_end;
    if (w.run->life_pipe[0] >= 0) fds[listeners + 1] = w.run->life_pipe[0];
    sys::Waiter waiter(fds.data(), fds.size(), listeners);
    sys::SmallArray<char, 8> ready(fds.size());
    int heartbeat_every = report_interval_ms(w.config->options);
    sigset_t serving, waiting;
    sigemptyset(&serving);
    sigaddset(&serving, SIGTERM);
    sigprocmask(SIG_BLOCK, &serving, &waiting);
    sigdelset(&waiting, SIGTERM);
    while (!w.stop) {
        bool listening = w.listening.load();
        waiter.listen(listening);
        if (waiter.wait(heartbeat_every, &waiting, ready.data()) < 0) {
            w.logf(LogLevel::error, "worker wait: %s", strerror(errno));
            break;
        }
        store(w.run->board.slot(w.slot).heartbeat_ms, now_ms());
        if (ready[listeners]) take_signals(w);
        if (w.run->life_pipe[0] >= 0 && ready[listeners + 1]) {
            w.logf(LogLevel::warning, "the parent is gone; worker exiting");
            w.stop = true;
        }
        // EPOLLEXCLUSIVE wakes one worker for a new connection: one that
        // leaves must take the connection first, or it would wait for the
        // next one to wake another worker. A drain is reason enough to
        // leave, since a listener shut down by it polls ready for ever and
        // the SIGTERM that comes with it may never get its turn.
        bool served = false;
        for (size_t i = 0; listening && i < listeners && !served; i++)
            if (ready[i]) served = accept_and_serve(w, int(i));  // one, then the pipes again
        if (!served && load(w.run->shared->draining)) w.stop = true;
    }
    sigprocmask(SIG_SETMASK, &waiting, nullptr);
}

int Worker::slot() const { return in_->slot; }
uint32_t Worker::generation() const { return in_->generation; }
const sockaddr_storage &Worker::peer() const { return in_->peer; }
socklen_t Worker::peer_length() const { return in_->peer_length; }
int Worker::listener() const { return in_->listener; }
bool Worker::is_child() const { return in_->is_child; }

void Worker::heartbeat() {
    store(in_->run->board.slot(in_->slot).heartbeat_ms, now_ms());
}

// Both may run on another thread than the worker loop's: they flip the
// flag, fix the idle count, and poke the loop out of a poll() whose set of
// listeners is now wrong.
void Worker::stop_listening() {
    if (!in_->listening.exchange(false)) return;
    WorkerState &w = *in_;
    Slot &slot = w.run->board.slot(in_->slot);
    __atomic_fetch_or(&slot.flags, uint16_t(slot_paused), __ATOMIC_ACQ_REL);
    leave_idle_count(w, slot);
    unsigned char byte = 0;
    (void)!sys::write(signal_pipe_write_end, &byte, 1);
}

void Worker::start_listening() {
    if (in_->listening.exchange(true)) return;
    WorkerState &w = *in_;
    Slot &slot = w.run->board.slot(in_->slot);
    __atomic_fetch_and(&slot.flags, uint16_t(~slot_paused), __ATOMIC_ACQ_REL);
    if (load(slot.state) == SlotState::idle) join_idle_count(w, slot);
    unsigned char byte = 0;
    (void)!sys::write(signal_pipe_write_end, &byte, 1);
}

bool Worker::listening() const { return in_->listening.load(); }

// Cheap enough to call between requests: two loads and, at most every
// 10 ms, a sigpending() (the parent's SIGTERM waits there while the worker
// serves: a retirement, a drain, the watchdog, or on Linux the parent's
// death) and, off Linux, a getppid() (the parent's death).
bool Worker::stopping() const {
    WorkerState &w = *in_;
    if (in_->stop || in_->told_to_stop) return true;
    Shared *shared = w.run->shared;
    if (shared && (load(shared->draining) || load(shared->generation) != in_->generation)) return true;
    int64_t now = now_ms();
    if (now - in_->signals_checked_ms < 10) return false;
    in_->signals_checked_ms = now;
    sigset_t pending;
    in_->told_to_stop = (sigpending(&pending) == 0 && sigismember(&pending, SIGTERM) == 1) ||
                        (!w.config->options.single_process && sys::parent_gone(w.run->parent_pid));
    return in_->told_to_stop;
}

// Waits as the worker loop does, on the handler's descriptor instead of the
// listeners: SIGTERM is let in for the wait only, and its byte lands in the
// worker's signal pipe, polled with the life pipe (EOF: the parent is gone).
// A graceful restart and a drain come with a SIGTERM too. The stop is
// checked before the descriptor, so a client that keeps talking cannot
// hold a stopping worker.
PREFORK_COLD int Worker::wait(int fd, short events, int timeout_ms) {
    WorkerState &w = *in_;
    sigset_t mask;
    sigprocmask(SIG_SETMASK, nullptr, &mask);
    sigdelset(&mask, SIGTERM);
    pollfd fds[3] = {{fd, events, 0}, {w.signal_read_end, POLLIN, 0}, {w.run->life_pipe[0], POLLIN, 0}};
    nfds_t count = fds[2].fd >= 0 ? 3 : 2;
    int64_t deadline = now_ms() + timeout_ms;
    int report_every = report_interval_ms(w.config->options);
    for (bool polled = false;; polled = true) {
        if (polled) {
            heartbeat();
            if (fds[1].revents) take_signals(w);
            if (count == 3 && fds[2].revents) w.told_to_stop = true;
        }
        if (stopping()) {
            errno = ECANCELED;
            return -1;
        }
        if (fds[0].revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
        if (fds[0].revents) return 1;
        int64_t left = timeout_ms < 0 ? INT_MAX : std::max<int64_t>(0, deadline - now_ms());
        if (polled && left == 0) return 0;
        int slice = int(std::min<int64_t>(left, report_every < 0 ? INT_MAX : report_every));
        if (sys::poll_with_mask(fds, count, slice, &mask) < 0) return -1;
    }
}

// True once the parent has died. Its life pipe says so first: a dying
// process closes its descriptors before its children get a new parent.
static bool parent_died(WorkerState &w, int wait_ms = 0) {
    pollfd life = {w.run->life_pipe[0], POLLIN, 0};
    return life.fd >= 0 && (sys::poll(&life, 1, wait_ms) > 0 || getppid() != w.run->parent_pid);
}

// The parent's order for this slot, or the drain, whichever kills first;
// failing both, what can be seen from here.
PREFORK_COLD StopReason Worker::stop_reason(int64_t *deadline_ms) const {
    WorkerState &w = *in_;
    StopReason reason = StopReason::none;
    int64_t deadline = 0;
    Shared *shared = w.run->shared;
    if (stopping() && parent_died(w)) {
        reason = StopReason::parent_gone;
    } else if (stopping()) {
        uint64_t order = load(stop_orders_of(shared)[w.slot]);
        reason = StopReason(order & 0xff);
        deadline = int64_t(order >> 8);
        int64_t drain = load(shared->drain_deadline_ms);
        if (load(shared->draining) && (reason == StopReason::none || drain < deadline)) {
            reason = StopReason::drain;
            deadline = drain;
        }
        // A SIGTERM without an order is someone's kill, or the parent's
        // death signal come before its pipe shows EOF (seen under
        // qemu-user): the pipe gets 20 ms to tell which.
        if (reason == StopReason::none)
            reason = w.config->options.single_process ? StopReason::drain
                     : parent_died(w, 20)             ? StopReason::parent_gone
                                                      : StopReason::signal;
    }
    if (deadline_ms) *deadline_ms = deadline;
    return reason;
}

void Worker::count_request(const char *request_line, uint64_t bytes) {
    Slot &slot = in_->run->board.slot(in_->slot);
    store(slot.heartbeat_ms, now_ms());  // a finished request is progress
    __atomic_add_fetch(&slot.requests, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&slot.bytes, bytes, __ATOMIC_RELAXED);
    if (request_line) note_request(request_line);
}

void Worker::note_request(const char *request_line) {
    Slot &slot = in_->run->board.slot(in_->slot);
    __atomic_add_fetch(&slot.request_seq, 1, __ATOMIC_RELAXED);  // odd: writing
    __atomic_thread_fence(__ATOMIC_RELEASE);
    size_t n = strnlen(request_line, sizeof slot.request - 1);
    memcpy(slot.request, request_line, n);
    slot.request[n] = '\0';
    __atomic_add_fetch(&slot.request_seq, 1, __ATOMIC_RELEASE);  // even: done
}

void Worker::set_activity(char letter) { store(in_->run->board.slot(in_->slot).activity, letter); }

Scoreboard &Worker::scoreboard() { return in_->run->board; }

bool Worker::pool_full() const {
    WorkerState &w = *in_;
    Shared *shared = w.run->shared;
    if (!shared || w.config->options.single_process) return false;
    return load(shared->idle_hint) <= 0 && load(shared->live) >= shared->max_clients;
}

void Worker::log(LogLevel level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vlog(in_->config->log, level, fmt, args);
    va_end(args);
}

// A number in [0, n) that differs between workers forked in the same
// millisecond: splitmix64 over the pid and the nanosecond clock. (rand()
// seeded with nearby values gives nearby first draws: every worker would
// recycle at the same count, the stampede the jitter exists to prevent.)
static uint64_t random_below(uint64_t n) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t(getpid()) << 32) ^ uint64_t(ts.tv_sec) * 1000000000u ^ uint64_t(ts.tv_nsec);
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    x ^= x >> 31;
    return x % n;
}

// Points the worker at the run's resources and at its slot.
static void set_worker_identity(ServerState &s, int slot) {
    WorkerState &w = s.worker;
    w.config = &s.config;
    w.run = &s.run;
    w.slot = slot;
    w.generation = s.pool.generation;
}

// Runs the init hooks, draws this worker's recycling limit, and marks the
// slot idle. false if a hook failed.
static bool get_worker_ready(WorkerState &w) {
    for (const InitHook &hook : w.config->hooks) {
        bool ok = false;
        std::string what;
        if (!sys::run_guarded([&] { ok = hook(w.handle); }, &what)) {
            w.logf(LogLevel::error, "worker init hook threw: %s; worker exiting", what.c_str());
            return false;
        }
        if (!ok) {
            w.logf(LogLevel::error, "worker init hook failed; worker exiting");
            return false;
        }
    }
    if (w.config->options.max_requests_per_child > 0) {
        w.limit = uint64_t(w.config->options.max_requests_per_child);
        if (w.config->options.max_requests_jitter > 0)
            w.limit += random_below(uint64_t(w.config->options.max_requests_jitter) + 1);
    }
    Slot &slot = w.run->board.slot(w.slot);
    store(slot.heartbeat_ms, now_ms());
    set_state(slot, SlotState::idle);  // already in the idle count since spawn
    // The parent sees a ready worker only when it looks: tell it, since a
    // retirement or the end of a back-off may be waiting for this moment.
    if (!w.config->options.single_process) wake_parent(w);
    return true;
}

// A drain worker's whole life once ready: its share of the connections
// taken from the queue at a graceful stop, backlog[0, share), then exit.
// SIGTERM stays blocked, as in worker_loop: it never interrupts a handler.
PREFORK_COLD static void serve_backlog(WorkerState &w, const std::vector<Accepted> &backlog, size_t share) {
    sigset_t serving;
    sigemptyset(&serving);
    sigaddset(&serving, SIGTERM);
    sigprocmask(SIG_BLOCK, &serving, nullptr);
    for (size_t i = 0; i < share; i++) {
        w.peer_length = sizeof w.peer;
        if (getpeername(backlog[i].fd, reinterpret_cast<sockaddr *>(&w.peer), &w.peer_length) < 0)
            w.peer_length = 0;
        serve_accepted(w, backlog[i].fd, backlog[i].listener);
    }
}

// Everything a fresh child does, in order, and its only way out: _exit().
// Signals are blocked on entry (see spawn_worker).
// A drain worker (share > 0) serves its share of s.pool.backlog instead of the
// listeners. From here on the worker reads only its own state.
[[noreturn]] static void become_worker(ServerState &s, int slot, const sigset_t &old_mask, size_t share) {
    WorkerState &w = s.worker;
    w.is_child = true;
    for (size_t i = 0; i < sizeof parent_signals / sizeof parent_signals[0]; i++) {
        int sig = parent_signals[i];
        void (*handler)(int) = SIG_DFL;
        if (sig == SIGTERM) handler = on_signal;
        if (sig == SIGHUP || sig == SIGTTIN || sig == SIGTTOU || sig == SIGUSR1 || sig == SIGUSR2 ||
            sig == SIGPIPE)
            handler = SIG_IGN;
        set_disposition(sig, handler);
    }
    // Parent-only descriptors.
    int *parent_only[] = {&s.run.signal_pipe[0], &s.run.wake_pipe[0], &s.run.life_pipe[1], &s.takeover.fd,
                          &s.upgrade.channel};
    for (int *fd : parent_only) {
        sys::close(*fd);
        *fd = -1;
    }
    for (size_t i = share; i < s.pool.backlog.size(); i++) sys::close(s.pool.backlog[i].fd);  // other shares
    // The worker's own pipe takes over the number of the parent's write end,
    // so signal_pipe_write_end keeps its value: a worker writes no page of
    // the program's data (that page would be its own copy, 4 KiB a worker).
    int own[2];
    if (sys::pipe(own) < 0 || dup2(own[1], signal_pipe_write_end) < 0) _exit(1);
    fcntl(signal_pipe_write_end, F_SETFD, FD_CLOEXEC);
    sys::close(own[1]);
    s.run.signal_pipe[1] = -1;
    w.signal_read_end = own[0];
    sys::set_parent_death_signal(SIGTERM);
    if (s.config.options.batch_scheduling) sys::use_batch_scheduling();
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if (getppid() != s.run.parent_pid) _exit(0);  // the parent died while we forked

    set_worker_identity(s, slot);
    store(w.run->board.slot(slot).pid, int32_t(getpid()));
    if (!get_worker_ready(w)) _exit(1);
    if (share) serve_backlog(w, s.pool.backlog, share);
    else worker_loop(w);
    Slot &own_slot = w.run->board.slot(slot);
    set_state(own_slot, SlotState::exiting);
    leave_idle_count(w, own_slot);
    _exit(0);
}

// For handlers that fork and exec: a worker blocks SIGTERM and ignores
// SIGPIPE, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1 and SIGUSR2, and both survive
// exec.
PREFORK_COLD void reset_signals_for_exec() {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : parent_signals) set_disposition(sig, SIG_DFL);
}

// The order matters: the groups and the group id while still root, the
// user id last. Once a process has given up root, setuid(0) must fail; if
// it does not (a saved set-user-ID of 0 that setuid() did not clear), the
// privileges were not dropped at all, and the caller must not go on.
PREFORK_COLD int drop_privileges(const std::string &user, std::string *error) {
    const passwd *account = getpwnam(user.c_str());
    const char *why = "no such user";
    if (account && account->pw_uid == geteuid()) return 0;
    if (account && initgroups(account->pw_name, account->pw_gid) == 0 && setgid(account->pw_gid) == 0 &&
        setuid(account->pw_uid) == 0) {
        if (account->pw_uid == 0 || setuid(0) != 0) return 0;
        why = "root privileges could be regained";
    } else if (account) {
        why = strerror(errno);
    }
    *error = format("cannot become user %s: %s", user.c_str(), why);
    return -1;
}

/* ---------------------------------------------------------------------------
   Parent. One poll() loop over the self-pipe and the wake pipe; each turn
   runs one maintenance pass that spawns, retires and watches workers and
   computes the next real deadline (a back-off, a retirement, a heartbeat, a
   grace period), which becomes the poll timeout. With no deadline the
   parent sleeps until a signal or a worker wakes it. */
static const int64_t retire_interval_ms = 250;
static const int64_t excess_grace_ms = 1000;  // idle above max this long before a retirement
static const int64_t young_death_ms = 1000;

PREFORK_COLD static int64_t backoff_ms(int failures) {
    if (failures <= 1) return 0;
    return std::min<int64_t>(int64_t(50) << std::min(failures - 1, 10), 10000);
}

PREFORK_COLD static void want_deadline(Pool &pool, int64_t at) {
    if (at > 0 && (pool.next_deadline_ms == 0 || at < pool.next_deadline_ms)) pool.next_deadline_ms = at;
}

// Runs f under the scoreboard lock, or without it when a stuck worker has
// held the lock past lock_wait_ms: the parent must keep running (its
// watchdog is what ends a stuck worker), and the price of going on
// unlocked is at most one snapshot that counts a worker twice.
template <class F> static void under_lock(ServerState &s, F f) {
    bool locked = s.run.board.lock(lock_wait_ms) == 0;
    if (!locked)
        s.logf(LogLevel::warning, "the scoreboard lock was held over %d ms; going on without it",
               lock_wait_ms);
    f();
    if (locked) s.run.board.unlock();
}

// A running worker gets SIGTERM now and SIGKILL at kill_at_ms, unless that
// is 0 (a drain has one deadline for everyone).
PREFORK_COLD static void tell_to_stop(Child &child, int64_t kill_at_ms) {
    if (child.state != ChildState::running) return;
    child.state = ChildState::stopping;
    child.kill_at_ms = kill_at_ms;
    kill(child.pid, SIGTERM);
}

// The watchdog's SIGTERM reaches a worker that is already stopping too (a
// retiree stuck in its last connection), with a deadline of its own.
PREFORK_COLD static void time_out(Child &child, int64_t kill_at_ms) {
    if (child.state == ChildState::killed) return;
    child.state = ChildState::stopping;
    child.timed_out = true;
    child.kill_at_ms = kill_at_ms;
    kill(child.pid, SIGTERM);
}

PREFORK_COLD static void kill_now(Child &child) {
    if (child.state == ChildState::killed) return;
    child.state = ChildState::killed;
    kill(child.pid, SIGKILL);
}

PREFORK_COLD static int64_t graceful_deadline(const Options &options) {
    return now_ms() + int64_t(options.graceful_timeout * 1000);
}

// systemd notifications (Options::notify_systemd), all from the parent.
// A new parent of an upgrade keeps quiet until it has taken over: the old
// one speaks for the service until then.
PREFORK_COLD static void notify(ServerState &s, const std::string &text) {
    if (s.notifier.fd >= 0 && !taking_over(s))
        sys::notify_send(s.notifier.fd, s.notifier.to, s.notifier.length, text);
}

static void stop_upgrade(ServerState &s, int signal, int64_t kill_at_ms);
static void upgrade_reaped(ServerState &s, int status);
static void watch_upgrade(ServerState &s, int64_t now);

// Takes what waits in a listener's queue into s.pool.backlog, without waiting.
PREFORK_COLD static void take_backlog(ServerState &s, int index) {
    for (int n = 0; n < 65536; n++) {
        int fd = sys::accept(s.config.listeners[size_t(index)].fd, nullptr, nullptr);
        if (fd < 0) return;
        s.pool.backlog.push_back(Accepted{fd, index});
    }
}

// A graceful stop refuses new connections at once, for every process that
// holds the listeners: on Linux shutdown(2) stops a listening socket from
// listening (elsewhere it fails, and the listeners close as workers exit).
// On TCP it also resets the connections already in the queue, so the
// parent accepts those first, and drain workers serve them (hand_backlog);
// a UNIX socket keeps its queue, taken after the shutdown too. Only the
// sockets this server bound: one a service manager passed must go on
// queueing for the next start.
PREFORK_COLD static void close_the_door(ServerState &s) {
    for (size_t i = 0; i < s.config.listeners.size(); i++) {
        if (!s.config.listeners[i].ours) continue;
        take_backlog(s, int(i));
        if (shutdown(s.config.listeners[i].fd, SHUT_RD) == 0) take_backlog(s, int(i));
    }
    if (!s.pool.backlog.empty())
        s.logf(LogLevel::info, "%zu connections were waiting in the listen queue; serving them", s.pool.backlog.size());
}

PREFORK_COLD static void close_backlog(Pool &pool) {
    for (Accepted &a : pool.backlog) sys::close(a.fd);
    pool.backlog.clear();
}

static int spawn_worker(ServerState &s, size_t share = 0);

// Forks drain workers for the connections taken at a graceful stop, each
// with a share of them, as far as free slots allow; the rest wait for a
// slot (or for graceful_timeout).
PREFORK_COLD static void hand_backlog(ServerState &s) {
    while (!s.pool.backlog.empty() && s.pool.live < s.config.options.max_clients) {
        size_t free_slots = size_t(s.config.options.max_clients - s.pool.live);
        size_t share = (s.pool.backlog.size() + free_slots - 1) / free_slots;
        if (spawn_worker(s, share) < 0) {
            want_deadline(s.pool, s.pool.spawn_not_before_ms);
            return;
        }
        for (size_t i = 0; i < share; i++) sys::close(s.pool.backlog[i].fd);
        s.pool.backlog.erase(s.pool.backlog.begin(), s.pool.backlog.begin() + long(share));
    }
}

PREFORK_COLD static void begin_stop(ServerState &s, Phase phase, const char *why) {
    if (s.pool.phase == Phase::stopping || s.pool.phase == phase) return;
    s.pool.phase = phase;
    s.pool.drain_deadline_ms = graceful_deadline(s.config.options);
    store(s.run.shared->drain_deadline_ms, s.pool.drain_deadline_ms);  // before the flag that says it counts
    store(s.run.shared->draining, uint32_t(1));
    // A drain refuses new connections at once, unless a new parent of an
    // upgrade listens on the same sockets (or we are that new parent and
    // have not taken over); a stop now drops what the queue held.
    if (phase == Phase::draining && !taking_over(s) && s.upgrade.state == Outgoing::none) close_the_door(s);
    if (phase == Phase::stopping) close_backlog(s.pool);
    // Close our copies of the listeners: once the last worker exits the
    // kernel stops queueing connections nobody would accept.
    for (Listener &l : s.config.listeners) {
        sys::close(l.fd);
        l.fd = -1;
    }
    notify(s, "STOPPING=1");
    stop_upgrade(s, phase == Phase::draining ? SIGTERM : SIGINT,
                     s.pool.drain_deadline_ms + int64_t(s.config.options.kill_grace * 1000));
    s.logf(LogLevel::notice, "%s: %s %d workers", why,
           phase == Phase::draining ? "draining" : "killing", s.pool.live);
    for (Child &child : s.pool.children) {
        if (!child.pid) continue;
        if (phase == Phase::draining) tell_to_stop(child, 0);
        else kill_now(child);
    }
}

PREFORK_COLD static void note_failure(Pool &pool, int64_t now, int64_t at_least_ms) {
    pool.failures++;
    pool.last_failure_ms = now;
    pool.spawn_not_before_ms = now + std::max(backoff_ms(pool.failures), at_least_ms);
}

// Forks one worker into the first free slot (a drain worker for the first
// `share` connections of the backlog, when share > 0). 0, or -1 if none was
// forked.
PREFORK_COLD static int spawn_worker(ServerState &s, size_t share) {
    size_t slot = 0;
    while (slot < s.pool.children.size() && s.pool.children[slot].pid) slot++;
    if (slot == s.pool.children.size()) return -1;
    int64_t now = now_ms();
    Slot &shared_slot = s.run.board.slot(int(slot));
    under_lock(s, [&] {
        memset(&shared_slot, 0, sizeof shared_slot);
        stop_orders_of(s.run.shared)[slot] = 0;
        shared_slot.generation = s.pool.generation;
        shared_slot.started_ms = now;
        shared_slot.heartbeat_ms = now;
        shared_slot.flags = slot_counted;  // a starting worker counts as idle
        set_state(shared_slot, SlotState::starting);
    });

    // The counts include the new worker before it exists: a worker that
    // asks at once whether the pool is full must find itself counted.
    Shared *shared = s.run.shared;
    __atomic_add_fetch(&shared->idle_hint, 1, __ATOMIC_ACQ_REL);
    store(shared->live, int32_t(s.pool.live + 1));

    sigset_t all, old_mask;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old_mask);
    pid_t pid = fork();
    if (pid == 0) become_worker(s, int(slot), old_mask, share);
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if (pid < 0) {
        __atomic_sub_fetch(&shared->idle_hint, 1, __ATOMIC_ACQ_REL);
        store(shared->live, int32_t(s.pool.live));
        store(shared_slot.flags, uint16_t(0));
        set_state(shared_slot, SlotState::free);
        note_failure(s.pool, now, 100);
        s.logf(LogLevel::error, "fork: %s; next try in %lld ms", strerror(fork_errno),
               (long long)(s.pool.spawn_not_before_ms - now));
        if (s.config.options.shutdown_on_error) {
            s.error = format("cannot fork a worker: %s", strerror(fork_errno));
            s.pool.result = -1;
            begin_stop(s, Phase::draining, "fork failed and shutdown_on_error is set");
        }
        return -1;
    }
    store(shared_slot.pid, int32_t(pid));
    Child &child = s.pool.children[slot];
    child = Child();
    child.pid = pid;
    child.generation = s.pool.generation;
    child.spawned_ms = now;
    s.pool.live++;
    s.logf(LogLevel::debug, "started worker %d (generation %u, slot %zu)", int(pid), s.pool.generation, slot);
    return 0;
}

// A crash, as opposed to a worker someone stopped: it exited non-zero, or a
// signal nobody sends on purpose (SIGSEGV, SIGABRT...) ended it. SIGKILL,
// SIGTERM and SIGINT come from operators and the OOM killer.
PREFORK_COLD static bool crashed(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status) != 0;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return sig != SIGKILL && sig != SIGTERM && sig != SIGINT;
}

PREFORK_COLD static std::string describe_status(int status) {
    if (WIFEXITED(status)) return format("exited with status %d", WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return format("was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    return format("ended with wait status %#x", status);
}

// A worker that died while serving a connection: a bug in a handler (or
// the OOM killer), not a worker that cannot start, so it is replaced at
// once and never feeds the back-off: one bad URL must not stop the pool.
// The first few in a second are logged with what they were serving; the
// rest of a storm is counted and summed up when the second is over.
static const int crash_lines_per_second = 5;

PREFORK_COLD static void flush_crash_log(ServerState &s, int64_t now) {
    CrashLog &c = s.pool.crash_log;
    if (now - c.window_start_ms < 1000) {
        if (c.unlogged) want_deadline(s.pool, c.window_start_ms + 1000);
        return;
    }
    if (c.unlogged)
        s.logf(LogLevel::error, "%d more workers died while serving in the last %.1f s (not logged one by one)",
               c.unlogged, (now - c.window_start_ms) / 1000.0);
    c = CrashLog();
    c.window_start_ms = now;
}

PREFORK_COLD static void log_death_while_serving(ServerState &s, const Child &child, const Slot &slot,
                                    const std::string &how, int64_t lived) {
    int64_t now = now_ms();
    flush_crash_log(s, now);
    CrashLog &c = s.pool.crash_log;
    if (c.logged >= crash_lines_per_second) {
        c.unlogged++;
        want_deadline(s.pool, c.window_start_ms + 1000);
        return;
    }
    c.logged++;
    Slot copy;
    copy_slot(slot, &copy);
    s.logf(LogLevel::error, "worker %d %s while serving \"%s\" (busy %lld ms, %lld ms after it started)%s",
           int(child.pid), how.c_str(), copy.request, (long long)(now - load(slot.busy_since_ms)),
           (long long)lived, s.pool.phase == Phase::running ? "; replacing it" : "");
}

// Logs how one worker ended and decides whether that was a failure. Only a
// worker that died before it was ready (an init hook, fork or exec trouble)
// or crashed young while idle feeds the back-off.
PREFORK_COLD static void judge_exit(ServerState &s, const Child &child, const Slot &slot, int status) {
    int64_t now = now_ms();
    int64_t lived = now - child.spawned_ms;
    SlotState state = load(slot.state);
    bool was_ready = state != SlotState::starting;
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    std::string how = describe_status(status);
    if (child.state != ChildState::running || (clean && was_ready)) {
        s.logf(LogLevel::info, "worker %d %s after %lld ms", int(child.pid), how.c_str(), (long long)lived);
    } else if (state == SlotState::busy) {
        log_death_while_serving(s, child, slot, how, lived);
    } else if (!was_ready || (lived < young_death_ms && crashed(status))) {
        note_failure(s.pool, now, 0);
        s.logf(LogLevel::error, "worker %d %s %lld ms after it started%s; failure %d in a row, "
               "next fork in %lld ms (back-off)", int(child.pid), how.c_str(), (long long)lived,
               was_ready ? "" : ", before it was ready", s.pool.failures,
               (long long)(s.pool.spawn_not_before_ms - now));
        if (!was_ready && s.config.options.shutdown_on_error && s.pool.phase == Phase::running) {
            s.error = format("worker %d could not start (%s); stopping because "
                             "shutdown_on_error is set", int(child.pid), how.c_str());
            s.pool.result = -1;
            begin_stop(s, Phase::draining, "a worker could not start");
        }
    } else {
        s.logf(LogLevel::warning, "worker %d %s after %lld ms (state %c); replacing it",
               int(child.pid), how.c_str(), (long long)lived, Snapshot::letter(slot));
    }
}

// Reaps every exited worker (SIGCHLDs coalesce) and frees its slot.
PREFORK_COLD static void reap_children(ServerState &s) {
    int status;
    pid_t pid;
    while ((pid = sys::waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == s.upgrade.pid) {
            upgrade_reaped(s, status);
            continue;
        }
        size_t index = 0;
        while (index < s.pool.children.size() && s.pool.children[index].pid != pid) index++;
        if (index == s.pool.children.size()) continue;  // not a worker of ours
        Child &child = s.pool.children[index];
        Slot &slot = s.run.board.slot(int(index));
        judge_exit(s, child, slot, status);
        Shared *shared = s.run.shared;
        if (load(slot.flags) & slot_counted) __atomic_sub_fetch(&shared->idle_hint, 1, __ATOMIC_ACQ_REL);
        under_lock(s, [&] {
            shared->retired_connections += slot.connections;
            shared->retired_requests += slot.requests;
            shared->retired_bytes += slot.bytes;
            memset(&slot, 0, sizeof slot);
        });
        child = Child();
        s.pool.live--;
    }
}

// Kills workers that stopped reporting, and those whose stop grace ran out.
PREFORK_COLD static void watch_workers(ServerState &s, int64_t now) {
    int64_t timeout_ms = int64_t(s.config.options.timeout * 1000);
    for (size_t i = 0; i < s.pool.children.size(); i++) {
        Child &child = s.pool.children[i];
        if (!child.pid || child.state == ChildState::killed) continue;
        Slot &slot = s.run.board.slot(int(i));
        if (child.kill_at_ms && now >= child.kill_at_ms) {
            s.logf(LogLevel::warning, "worker %d did not exit %s; sending SIGKILL", int(child.pid),
                   child.timed_out ? "after its timeout" : "within its grace period");
            kill_now(child);
            continue;
        }
        want_deadline(s.pool, child.kill_at_ms);
        if (timeout_ms <= 0 || child.timed_out) continue;
        int64_t heartbeat = load(slot.heartbeat_ms);
        if (now - heartbeat <= timeout_ms) {
            want_deadline(s.pool, heartbeat + timeout_ms + 1);
            continue;
        }
        SlotState state = load(slot.state);
        Slot copy;
        copy_slot(slot, &copy);
        if (state == SlotState::busy)
            s.logf(LogLevel::error, "busy worker %d timed out: no heartbeat for %.1f s, serving "
                   "\"%s\" for %.1f s; sending SIGTERM", int(child.pid), (now - heartbeat) / 1000.0,
                   copy.request, (now - load(slot.busy_since_ms)) / 1000.0);
        else
            s.logf(LogLevel::error, "%s worker %d timed out: no report for %.1f s; sending SIGTERM",
                   state == SlotState::starting ? "starting" : "idle", int(child.pid),
                   (now - heartbeat) / 1000.0);
        time_out(child, now + int64_t(s.config.options.kill_grace * 1000));
        store(stop_orders_of(s.run.shared)[i], stop_order(StopReason::timeout, child.kill_at_ms));
        want_deadline(s.pool, child.kill_at_ms);
    }
}

// Retires the oldest idle worker of the current generation.
PREFORK_COLD static void retire_one_idle(ServerState &s, int idle) {
    Child *oldest = nullptr;
    for (size_t i = 0; i < s.pool.children.size(); i++) {
        Child &child = s.pool.children[i];
        if (!child.pid || child.state != ChildState::running || child.generation != s.pool.generation) continue;
        const Slot &slot = s.run.board.slot(int(i));
        if (load(slot.state) != SlotState::idle || (load(slot.flags) & slot_paused)) continue;
        if (!oldest || child.spawned_ms < oldest->spawned_ms) oldest = &child;
    }
    if (!oldest) return;
    s.logf(LogLevel::info, "retiring idle worker %d, the oldest of %d idle (max_spare_servers %d)",
           int(oldest->pid), idle, s.config.options.max_spare_servers);
    int64_t deadline = graceful_deadline(s.config.options);
    store(stop_orders_of(s.run.shared)[oldest - s.pool.children.data()], stop_order(StopReason::retire, deadline));
    tell_to_stop(*oldest, deadline);
}

// Spawns what the pool lacks and retires one spare too many.
PREFORK_COLD static void size_pool(ServerState &s, int64_t now) {
    int idle = 0, starting = 0, current = 0;
    for (size_t i = 0; i < s.pool.children.size(); i++) {
        Child &child = s.pool.children[i];
        if (!child.pid || child.state != ChildState::running || child.generation != s.pool.generation) continue;
        current++;
        const Slot &slot = s.run.board.slot(int(i));
        SlotState state = load(slot.state);
        if (state == SlotState::idle && !(load(slot.flags) & slot_paused)) idle++;
        if (state == SlotState::starting) starting++;
        if (s.pool.failures && state != SlotState::starting && child.spawned_ms > s.pool.last_failure_ms) {
            if (now - child.spawned_ms >= young_death_ms) {
                s.logf(LogLevel::notice, "workers start normally again; back-off cleared");
                s.pool.failures = 0;
            } else {
                want_deadline(s.pool, child.spawned_ms + young_death_ms);
            }
        }
    }
    int need = std::max(s.config.options.min_spare_servers - idle - starting, s.pool.ramp_target - current);
    int spawn = std::min(need, s.config.options.max_clients - s.pool.live);
    if (spawn > 0 && now < s.pool.spawn_not_before_ms) {
        want_deadline(s.pool, s.pool.spawn_not_before_ms);
    } else {
        for (int i = 0; i < spawn && s.pool.phase == Phase::running; i++) {
            if (spawn_worker(s) < 0) {
                want_deadline(s.pool, s.pool.spawn_not_before_ms);
                break;
            }
            current++;
        }
    }
    if (current >= s.pool.ramp_target) s.pool.ramp_target = 0;
    // Too many idle workers: retire one, but only once the excess has
    // lasted a second, so that a load whose idle count swings across the
    // bounds from one connection to the next does not churn the pool.
    // While the parent times an excess, workers that turn idle need not
    // wake it: it looks again at the deadline.
    store(s.run.shared->excess_seen, uint32_t(idle > s.config.options.max_spare_servers));
    if (idle <= s.config.options.max_spare_servers) {
        s.pool.excess_since_ms = 0;
        return;
    }
    if (!s.pool.excess_since_ms) s.pool.excess_since_ms = now;
    int64_t retire_at = std::max(s.pool.excess_since_ms + excess_grace_ms, s.pool.next_retire_ms);
    if (now >= retire_at) {
        retire_one_idle(s, idle);
        s.pool.next_retire_ms = now + retire_interval_ms;
        retire_at = s.pool.next_retire_ms;
    }
    want_deadline(s.pool, retire_at);
}

PREFORK_COLD static void maintain_pool(ServerState &s) {
    int64_t now = now_ms();
    s.pool.next_deadline_ms = 0;
    if (s.pool.phase == Phase::running) size_pool(s, now);
    store(s.run.shared->live, int32_t(s.pool.live));
    watch_workers(s, now);
    flush_crash_log(s, now);
    watch_upgrade(s, now);
    if (s.pool.phase == Phase::draining && !s.pool.backlog.empty()) {
        if (now >= s.pool.spawn_not_before_ms) hand_backlog(s);
        else want_deadline(s.pool, s.pool.spawn_not_before_ms);
    }
    if (s.pool.phase != Phase::running && !s.pool.drain_kill_sent && (s.pool.live > 0 || !s.pool.backlog.empty())) {
        if (now >= s.pool.drain_deadline_ms) {
            s.pool.drain_kill_sent = true;
            close_backlog(s.pool);
            s.logf(LogLevel::warning, "graceful_timeout of %g s ran out; killing %d workers",
                   s.config.options.graceful_timeout, s.pool.live);
            for (Child &child : s.pool.children)
                if (child.pid) kill_now(child);
        } else {
            want_deadline(s.pool, s.pool.drain_deadline_ms);
        }
    }
    if (s.config.options.debug_scoreboard) {
        if (now >= s.pool.next_dump_ms) {
            s.logf(LogLevel::debug, "scoreboard %s", s.run.board.snapshot().render().c_str());
            s.pool.next_dump_ms = now + 1000;
        }
        want_deadline(s.pool, s.pool.next_dump_ms);
    }
}

// After each pass: READY=1 once a worker of this generation is ready, and
// the busy/idle counts when they changed (at most once a second).
PREFORK_COLD static void notify_progress(ServerState &s, int64_t now) {
    if (s.notifier.fd < 0 || s.pool.phase != Phase::running || taking_over(s)) return;
    int busy = 0, idle = 0;
    bool ready = false;
    for (size_t i = 0; i < s.pool.children.size(); i++) {
        if (!s.pool.children[i].pid) continue;
        SlotState state = load(s.run.board.slot(int(i)).state);
        busy += state == SlotState::busy;
        idle += state == SlotState::idle;
        ready |= s.pool.children[i].generation == s.pool.generation && (state == SlotState::busy || state == SlotState::idle);
    }
    std::string status = format("STATUS=%d busy, %d idle workers", busy, idle);
    if (ready && s.notifier.ready_generation != s.pool.generation) {
        s.notifier.ready_generation = s.pool.generation;
        notify(s, "READY=1\n" + status);
    } else if (s.notifier.ready_generation && status != s.notifier.status_sent && now - s.notifier.status_sent_ms >= 1000) {
        notify(s, status);
    } else {
        return;
    }
    s.notifier.status_sent = status;
    s.notifier.status_sent_ms = now;
}

// The old workers' orders go out before the new generation number, which
// makes their stopping() true: whoever sees the one finds the other.
PREFORK_COLD static void graceful_restart(ServerState &s) {
    notify(s, format("RELOADING=1\nMONOTONIC_USEC=%lld", (long long)now_ms() * 1000));
    int64_t deadline = graceful_deadline(s.config.options);
    for (size_t i = 0; i < s.pool.children.size(); i++)
        if (s.pool.children[i].pid && s.pool.children[i].state == ChildState::running)
            store(stop_orders_of(s.run.shared)[i], stop_order(StopReason::restart, deadline));
    s.pool.generation++;
    store(s.run.shared->generation, s.pool.generation);
    s.pool.ramp_target = s.config.options.start_servers;
    s.logf(LogLevel::notice, "graceful restart: starting generation %u", s.pool.generation);
    maintain_pool(s);  // the new generation first, then retire the old one
    for (Child &child : s.pool.children)
        if (child.pid && child.generation != s.pool.generation) tell_to_stop(child, deadline);
}

/* ---------------------------------------------------------------------------
   Binary upgrade (SIGUSR2), as nginx and unicorn do it. The old parent
   forks a child that puts the listeners on fds 3... as socket activation
   does (LISTEN_FDS, LISTEN_PID), one end of a socket pair after them
   (PREFORK_UPGRADE_FD), and executes the upgrade command: the binary on
   disk now. The new parent adopts the sockets (listen_inherited), starts
   its pool, and once start_servers workers are ready writes 'R'. Only then
   does the old parent answer 'A', drain and exit: its workers finish what
   they serve while the new ones accept from the same sockets, so no
   connection finds nobody. The new parent owns the socket files and
   speaks to systemd only after the 'A', so an old parent that gave up in
   the meantime loses nothing. A new parent that exits, closes its end, or
   is not ready within upgrade_timeout is stopped, and the old one serves
   on.

   Each side is one state machine; every transition is a function below.

   The old parent (OutgoingUpgrade):
     state        event                       transition          next
     none         SIGUSR2                     start_upgrade       waiting
     waiting      'R' on the channel          hand_over           handed_over
     waiting      'R', but 'A' cannot be written
                                              abandon_upgrade     stopping
     waiting      'E', EOF, upgrade_timeout   abandon_upgrade     stopping
     waiting      SIGTERM or SIGINT to us     stop_upgrade        stopping
     stopping     SIGTERM or SIGINT to us     stop_upgrade        stopping
     stopping     its kill_at_ms              kill_upgrade        killed
     any          it is reaped                upgrade_reaped      none
   In handed_over we drain (begin_stop) and leave the new parent be; in
   handed_over and killed a stop sends it nothing more.

   The new parent (IncomingUpgrade):
     none         LISTEN_FDS and PREFORK_UPGRADE_FD found
                                              listen_inherited    starting
     starting     the pool is first ready     become_ready        told_ready
     starting     the ready hook fails, or 'R' cannot be written
                                              cut_off             cut_off
                  (our end closes: the old parent reads EOF and stops us)
     told_ready   'A'                         hear_from_old_parent none
     told_ready   EOF                         hear_from_old_parent cut_off
   Until it is back to none the new parent keeps quiet towards systemd, does
   not own the socket files and never shuts the listeners (upgrading()). */
// Names the new parent's end of the socket pair on which it tells the old
// parent that it is ready ('R') and hears back that it has taken over ('A').
static const char upgrade_variable[] = "PREFORK_UPGRADE_FD";

[[noreturn]] PREFORK_COLD static void exec_new_parent(ServerState &s, int channel) {
    // The dispositions run() found, restored before unblocking: our handler
    // would write into the old parent's self-pipe.
    signal_pipe_write_end = -1;
    for (size_t i = 0; i < sizeof parent_signals / sizeof parent_signals[0]; i++)
        sigaction(parent_signals[i], &s.saved_actions[i], nullptr);
    // Until the new run() takes it, a second SIGUSR2 must not end the new
    // program (an ignored signal stays ignored across exec).
    set_disposition(SIGUSR2, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // Every descriptor moves above its target first, so that no dup2()
    // lands on one still to be moved.
    int count = int(s.config.listeners.size()), above = 3 + count + 1;
    std::vector<int> moved;
    for (const Listener &l : s.config.listeners) moved.push_back(sys::duplicate(l.fd, above));
    moved.push_back(sys::duplicate(channel, above));
    for (int i = 0; i <= count; i++)
        if (moved[size_t(i)] < 0 || sys::dup2(moved[size_t(i)], 3 + i) < 0) _exit(127);
    std::vector<char *> argv;
    for (std::string &arg : s.config.upgrade_command) argv.push_back(&arg[0]);
    argv.push_back(nullptr);
    // "owned": a socket file we made, which the new parent removes at its
    // end once it has taken over; "bound": a socket we bound, without a
    // file of ours; "passed": one a service manager made. The new parent
    // shuts the first two at a graceful stop, never the third.
    std::string names;
    for (const Listener &l : s.config.listeners)
        names += !l.unix_path.empty() ? "owned:" : l.ours ? "bound:" : "passed:";
    names.pop_back();
    if (setenv("LISTEN_FDS", std::to_string(long(count)).c_str(), 1) == 0 &&
        setenv("LISTEN_PID", std::to_string(long(getpid())).c_str(), 1) == 0 &&
        setenv(upgrade_variable, std::to_string(long(3 + count)).c_str(), 1) == 0 &&
        setenv("LISTEN_FDNAMES", names.c_str(), 1) == 0) {
        // execvp() only for a bare name: for a path it would hand a file
        // that is not a program to the shell.
        if (strchr(argv[0], '/')) execv(argv[0], argv.data());
        else execvp(argv[0], argv.data());
    }
    unsigned char message[1 + sizeof(int)] = {'E'};
    int err = errno;
    memcpy(message + 1, &err, sizeof err);
    (void)sys::write(3 + count, message, sizeof message);
    _exit(127);
}

// none -> waiting.
PREFORK_COLD static void start_upgrade(ServerState &s) {
    if (s.pool.phase != Phase::running) {
        s.logf(LogLevel::notice, "SIGUSR2: stopping; no upgrade");
        return;
    }
    if (s.config.upgrade_command.empty()) {
        s.logf(LogLevel::notice, "SIGUSR2: binary upgrade is not enabled; nothing to do");
        return;
    }
    if (s.upgrade.state != Outgoing::none || taking_over(s)) {
        s.logf(LogLevel::notice, "SIGUSR2: an upgrade is already under way (%s %d)",
               s.upgrade.pid ? "new parent" : "old parent",
               int(s.upgrade.pid ? s.upgrade.pid : getppid()));
        return;
    }
    int ready[2];
    if (sys::socket_pair(ready) < 0) {
        s.logf(LogLevel::error, "SIGUSR2: socketpair: %s; no upgrade", strerror(errno));
        return;
    }
    sigset_t all, old_mask;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old_mask);
    pid_t pid = fork();
    if (pid == 0) exec_new_parent(s, ready[1]);
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    sys::close(ready[1]);
    if (pid < 0) {
        sys::close(ready[0]);
        s.logf(LogLevel::error, "SIGUSR2: fork: %s; no upgrade", strerror(fork_errno));
        return;
    }
    OutgoingUpgrade &u = s.upgrade;
    u = OutgoingUpgrade();
    u.state = Outgoing::waiting;
    u.pid = pid;
    u.channel = ready[0];
    u.deadline_ms = now_ms() + int64_t(s.config.options.upgrade_timeout * 1000);
    notify(s, format("RELOADING=1\nMONOTONIC_USEC=%lld", (long long)now_ms() * 1000));
    s.logf(LogLevel::notice, "SIGUSR2: upgrading: started %s as pid %d; waiting up to %g s for "
           "its workers", s.config.upgrade_command[0].c_str(), int(pid), s.config.options.upgrade_timeout);
}

// waiting or stopping -> stopping: the new parent will not take over. The
// signal (none if 0) goes now, SIGKILL at kill_at_ms or at an earlier
// deadline already set. A SIGINT after a SIGTERM gets through, as it would
// to us; nothing more reaches a new parent already sent SIGKILL.
PREFORK_COLD static void stop_upgrade(ServerState &s, int signal, int64_t kill_at_ms) {
    OutgoingUpgrade &u = s.upgrade;
    if (u.state != Outgoing::waiting && u.state != Outgoing::stopping) return;
    sys::close(u.channel);
    u.channel = -1;
    u.deadline_ms = 0;
    u.state = Outgoing::stopping;
    if (signal) kill(u.pid, signal);
    if (!u.kill_at_ms || kill_at_ms < u.kill_at_ms) u.kill_at_ms = kill_at_ms;
}

// stopping -> killed.
PREFORK_COLD static void kill_upgrade(ServerState &s) {
    s.logf(LogLevel::warning, "upgrade: new parent %d did not exit; sending SIGKILL", int(s.upgrade.pid));
    kill(s.upgrade.pid, SIGKILL);
    s.upgrade.state = Outgoing::killed;
}

// waiting -> stopping: gives up on the new parent; unless it is already on
// its way out (exiting), it is told to stop.
PREFORK_COLD static void abandon_upgrade(ServerState &s, const std::string &why, bool exiting = false) {
    s.logf(LogLevel::error, "upgrade failed: %s; still serving with this binary", why.c_str());
    stop_upgrade(s, exiting ? 0 : SIGTERM, now_ms() + int64_t(s.config.options.kill_grace * 1000));
    notify(s, "READY=1");  // the RELOADING=1 of SIGUSR2 is over
}

// waiting -> handed_over: the new parent is ready. It speaks for the
// service from now on, owns the socket files, and this parent drains.
PREFORK_COLD static void hand_over(ServerState &s) {
    OutgoingUpgrade &u = s.upgrade;
    // 'A': the new parent may take the socket files and speak to systemd.
    // Once it has it, the upgrade cannot be undone.
    unsigned char acknowledged = 'A';
    if (sys::write(u.channel, &acknowledged, 1) != 1) {
        abandon_upgrade(s, format("new parent %d went away as it got ready", int(u.pid)));
        return;
    }
    sys::close(u.channel);
    u.channel = -1;
    u.state = Outgoing::handed_over;
    notify(s, format("MAINPID=%d\nREADY=1", int(u.pid)));
    sys::close(s.notifier.fd);
    s.notifier.fd = -1;
    for (Listener &l : s.config.listeners) l.unix_path.clear();
    s.logf(LogLevel::notice, "upgrade: new parent %d is ready; this one drains and exits", int(u.pid));
    begin_stop(s, Phase::draining, "upgraded");
}

// While waiting, reads the new parent's word: 'R' (ready), 'E' and an errno
// (it could not be executed), or EOF (it ended or gave up before it was
// ready). Once it has exited (reaped), a word left unread, or none at all,
// is a failure.
PREFORK_COLD static void hear_from_upgrade(ServerState &s, bool exited = false) {
    unsigned char message[1 + sizeof(int)];
    ssize_t n = sys::read(s.upgrade.channel, message, sizeof message);
    if (n < 0 && !exited) return;
    if (n >= 1 && message[0] == 'R' && !exited) {
        hand_over(s);
        return;
    }
    if (n == sizeof message && message[0] == 'E') {
        int err;
        memcpy(&err, message + 1, sizeof err);
        abandon_upgrade(s, format("cannot execute %s: %s", s.config.upgrade_command[0].c_str(), strerror(err)),
                        true);
        return;
    }
    abandon_upgrade(s, format("new parent %d ended before it was ready", int(s.upgrade.pid)), exited);
}

// any -> none.
PREFORK_COLD static void upgrade_reaped(ServerState &s, int status) {
    std::string how = describe_status(status);
    s.logf(s.upgrade.state == Outgoing::handed_over ? LogLevel::warning : LogLevel::notice,
           "upgrade: new parent %d %s", int(s.upgrade.pid), how.c_str());
    if (s.upgrade.state == Outgoing::waiting) hear_from_upgrade(s, true);  // what it said before it went
    s.upgrade = OutgoingUpgrade();
}

// The old parent's deadlines: upgrade_timeout while waiting, SIGKILL while
// stopping.
PREFORK_COLD static void watch_upgrade(ServerState &s, int64_t now) {
    OutgoingUpgrade &u = s.upgrade;
    if (u.state == Outgoing::waiting && now >= u.deadline_ms) {
        hear_from_upgrade(s);  // a word that came with the deadline still counts
        if (u.state == Outgoing::waiting)
            abandon_upgrade(s, format("new parent %d was not ready after %g s", int(u.pid),
                                      s.config.options.upgrade_timeout));
    }
    if (u.state == Outgoing::waiting) want_deadline(s.pool, u.deadline_ms);
    if (u.state == Outgoing::stopping && u.kill_at_ms && now >= u.kill_at_ms) kill_upgrade(s);
    if (u.state == Outgoing::stopping) want_deadline(s.pool, u.kill_at_ms);
}

// starting -> cut_off: this parent will not take over; the old parent
// stops it (or has gone).
PREFORK_COLD static void cut_off(ServerState &s) {
    sys::close(s.takeover.fd);
    s.takeover.fd = -1;
    s.takeover.state = Incoming::cut_off;
}

// Once start_servers workers are ready the ready hook runs, then, in the
// new parent of an upgrade, starting -> told_ready: the old parent is told.
PREFORK_COLD static void become_ready(ServerState &s) {
    s.pool.was_ready = true;
    if (s.config.ready && !s.config.ready()) {
        s.error = "the ready hook failed";
        s.pool.result = -1;
        s.logf(LogLevel::error, "the ready hook failed; stopping");
        if (s.takeover.state == Incoming::starting) cut_off(s);
        begin_stop(s, Phase::draining, "the ready hook failed");
        return;
    }
    if (s.takeover.state != Incoming::starting) return;
    unsigned char ready = 'R';
    bool told = sys::write(s.takeover.fd, &ready, 1) == 1;
    s.logf(told ? LogLevel::notice : LogLevel::error, "upgrade: %s the old parent %d",
           told ? "ready; telling" : "could not tell", int(getppid()));
    if (told) s.takeover.state = Incoming::told_ready;
    else cut_off(s);
}

// told_ready -> none or cut_off: the old parent's answer to 'R'. 'A', and we
// have taken over (the socket files it made are ours, systemd hears from
// us); EOF, and it gave up on us (its SIGTERM follows).
PREFORK_COLD static void hear_from_old_parent(ServerState &s) {
    unsigned char answer = 0;
    ssize_t n = sys::read(s.takeover.fd, &answer, 1);
    if (n < 0) return;
    if (n != 1 || answer != 'A') {
        s.logf(LogLevel::error, "upgrade: the old parent gave up on this one");
        cut_off(s);
        return;
    }
    sys::close(s.takeover.fd);
    s.takeover = IncomingUpgrade();
    for (Listener &l : s.config.listeners)
        if (l.file_handed) l.unix_path = l.address.substr(5);
    // The old parent says READY=1 with MAINPID=; our STATUS= waits a
    // second, so that systemd hears it from the main pid.
    s.notifier.ready_generation = s.pool.generation;
    s.notifier.status_sent_ms = now_ms();
    s.logf(LogLevel::notice, "upgrade: taken over from the old parent %d", int(getppid()));
}

// The socket of an upgrade the parent loop polls: the old parent's channel
// while waiting, the new parent's while told_ready; else -1.
PREFORK_COLD static int upgrade_fd(const ServerState &s) {
    if (s.upgrade.state == Outgoing::waiting) return s.upgrade.channel;
    if (s.takeover.state == Incoming::told_ready) return s.takeover.fd;
    return -1;
}

PREFORK_COLD static void hear_upgrade_fd(ServerState &s) {
    if (s.upgrade.state == Outgoing::waiting) hear_from_upgrade(s);
    else if (s.takeover.state == Incoming::told_ready) hear_from_old_parent(s);
}

// A whole decimal number of at most 9 digits. false if malformed.
PREFORK_COLD static bool parse_count(const char *text, long *out) {
    size_t n = strlen(text);
    if (n == 0 || n > 9 || strspn(text, "0123456789") != n) return false;
    *out = strtol(text, nullptr, 10);
    return true;
}

// none -> starting, when an old parent passed its socket pair too.
PREFORK_COLD int Server::listen_inherited() {
    ServerState &s = *state_;
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    const char *handover = getenv(upgrade_variable);
    std::string names = handover && getenv("LISTEN_FDNAMES") ? getenv("LISTEN_FDNAMES") : "";
    long owner = 0, count = 0, handover_fd = -1;
    bool present = pid && fds;
    bool ok = !present || (parse_count(pid, &owner) && parse_count(fds, &count) && count < 1000 &&
                           (!handover || (parse_count(handover, &handover_fd) && handover_fd >= 3 + count)));
    // Gone from the environment either way: no child of ours takes them
    // for its own.
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    unsetenv(upgrade_variable);
    if (!ok) return s.fail("malformed LISTEN_PID/LISTEN_FDS in the environment");
    if (!present || owner != long(getpid())) return 0;
    // An upgrading parent names the sockets whose files it made "owned":
    // they become ours to remove once we take over.
    for (int fd = 3; fd < 3 + count; fd++) {
        if (listen_fd(fd) < 0) return s.fail("passed by the service manager: " + s.error);
        Listener &l = s.config.listeners.back();
        l.unclaimed = true;
        size_t end = names.find(':');
        std::string name = names.substr(0, end);
        l.file_handed = name == "owned" && l.address.compare(0, 5, "unix:") == 0;
        l.ours = name == "owned" || name == "bound";
        names.erase(0, end == std::string::npos ? names.size() : end + 1);
    }
    if (handover && handover_fd >= 0) {
        if (sys::set_close_on_exec(int(handover_fd)) < 0)
            return s.fail(format("%s=%ld: %s", upgrade_variable, handover_fd, strerror(errno)));
        s.takeover.fd = int(handover_fd);
        s.takeover.state = Incoming::starting;
    }
    return int(count);
}

PREFORK_COLD bool Server::upgrading() const { return taking_over(*state_); }

PREFORK_COLD int Server::enable_upgrade(int argc, char *const *argv) {
    ServerState &s = *state_;
    if (argc < 1 || !argv[0] || !*argv[0]) return s.fail("enable_upgrade: no program name in argv[0]");
    std::vector<std::string> command(argv, argv + argc);
    // A path relative to here must still lead to the program if the
    // directory changes; a bare name is looked up in PATH at the upgrade.
    if (command[0].find('/') != std::string::npos && command[0][0] != '/') {
        char here[PATH_MAX];
        if (!getcwd(here, sizeof here)) return s.fail(format("enable_upgrade: getcwd: %s", strerror(errno)));
        command[0] = std::string(here) + "/" + command[0].substr(command[0].compare(0, 2, "./") ? 0 : 2);
    }
    s.config.upgrade_command = command;
    return 0;
}

/* ---------------------------------------------------------------------------
   The parent loop: signals as the pipe brings them, one maintenance pass a
   turn, and a poll() until the nearest deadline. */
PREFORK_COLD static void check_ready(ServerState &s) {
    if (s.pool.was_ready || s.pool.phase != Phase::running) return;
    int ready = 0;
    for (size_t i = 0; i < s.pool.children.size(); i++) {
        if (!s.pool.children[i].pid || s.pool.children[i].generation != s.pool.generation) continue;
        SlotState state = load(s.run.board.slot(int(i)).state);
        ready += state == SlotState::idle || state == SlotState::busy;
    }
    // start_servers, unless the pool would retire some of them as spares.
    const Options &o = s.config.options;
    if (ready >= std::max(1, std::min({o.start_servers, o.max_clients, o.max_spare_servers})))
        become_ready(s);
}

PREFORK_COLD static void adjust_spares(ServerState &s, int delta) {
    Options &o = s.config.options;
    if (delta < 0 && o.min_spare_servers <= 1) {
        s.logf(LogLevel::notice, "SIGTTOU: min_spare_servers is already 1");
        return;
    }
    o.min_spare_servers += delta;
    o.max_spare_servers += delta;
    store(s.run.shared->min_spare, int32_t(o.min_spare_servers));
    store(s.run.shared->max_spare, int32_t(o.max_spare_servers));
    s.logf(LogLevel::notice, "%s: min_spare_servers %d, max_spare_servers %d",
           delta > 0 ? "SIGTTIN" : "SIGTTOU", o.min_spare_servers, o.max_spare_servers);
}

PREFORK_COLD static void handle_signal(ServerState &s, int signal) {
    switch (signal) {
    case SIGCHLD: reap_children(s); break;
    case SIGTERM: begin_stop(s, Phase::draining, "SIGTERM"); break;
    case SIGINT: begin_stop(s, Phase::stopping, "SIGINT"); break;
    case SIGHUP:
        if (s.pool.phase != Phase::running) break;
        if (s.config.restart) s.config.restart();  // e.g. settings read again, for the new workers
        graceful_restart(s);
        break;
    case SIGUSR1:
        // Reopen the logs: the parent by the hook, the workers by being
        // replaced (a graceful restart), since each holds the files it
        // inherited.
        if (s.pool.phase != Phase::running) break;
        if (!s.config.reopen) {
            s.logf(LogLevel::notice, "SIGUSR1: no reopen hook; nothing to do");
            break;
        }
        s.config.reopen();
        s.logf(LogLevel::notice, "SIGUSR1: logs reopened; replacing the workers");
        graceful_restart(s);
        break;
    case SIGUSR2: start_upgrade(s); break;
    case SIGTTIN: adjust_spares(s, 1); break;
    case SIGTTOU: adjust_spares(s, -1); break;
    default: break;
    }
}

PREFORK_COLD static int run_pool(ServerState &s) {
    if (sys::pipe(s.run.wake_pipe) < 0 || sys::pipe(s.run.life_pipe) < 0)
        return s.fail(format("pipe: %s", strerror(errno)));
    s.pool.children.assign(size_t(s.config.options.max_clients), Child());
    s.pool.ramp_target = s.config.options.start_servers;
    if (s.config.options.notify_systemd) s.notifier.fd = sys::notify_open(&s.notifier.to, &s.notifier.length);
    s.logf(LogLevel::notice, "prefork parent %d: starting %d workers on %zu listeners",
           int(getpid()), s.config.options.start_servers, s.config.listeners.size());
    for (;;) {
        maintain_pool(s);
        check_ready(s);
        notify_progress(s, now_ms());
        // An upgrade not yet handed over is waited for like a worker.
        if (s.pool.phase != Phase::running && s.pool.live == 0 && s.pool.backlog.empty() &&
            (s.upgrade.state == Outgoing::none || s.upgrade.state == Outgoing::handed_over))
            break;
        int timeout = -1;
        if (s.pool.next_deadline_ms)
            timeout = int(std::min<int64_t>(std::max<int64_t>(0, s.pool.next_deadline_ms - now_ms()), 1 << 30));
        // The third: the socket of an upgrade, as the old parent or the new.
        pollfd fds[3] = {{s.run.signal_pipe[0], POLLIN, 0}, {s.run.wake_pipe[0], POLLIN, 0},
                         {upgrade_fd(s), POLLIN, 0}};
        if (sys::poll(fds, fds[2].fd >= 0 ? 3 : 2, timeout) < 0)
            return s.fail(format("poll: %s", strerror(errno)));
        // Drain, then clear: a worker that finds the flag set before the
        // clear has stored its state already, and the pass that follows
        // sees it. Cleared first, a byte written in between would be
        // drained with the flag left set, and no worker would wake us again.
        if (fds[1].revents) {
            drain_pipe(s.run.wake_pipe[0], [](unsigned char) {});
            store(s.run.shared->wake_pending, 0u);
        }
        if (fds[0].revents) drain_pipe(s.run.signal_pipe[0], [&](unsigned char sig) { handle_signal(s, sig); });
        // After the signals: a SIGTERM that came with the word 'R' stops
        // the upgrade instead of being lost in a drain already begun.
        if (fds[2].fd >= 0 && fds[2].revents && fds[2].fd == upgrade_fd(s)) hear_upgrade_fd(s);
    }
    s.logf(LogLevel::notice, "all workers are gone; parent exiting");
    sys::close(s.notifier.fd);
    s.notifier.fd = -1;
    return s.pool.result;
}

PREFORK_COLD static int run_single(ServerState &s) {
    s.worker.signal_read_end = s.run.signal_pipe[0];
    set_worker_identity(s, 0);
    Slot &slot = s.run.board.slot(0);
    store(slot.pid, int32_t(getpid()));
    store(slot.started_ms, now_ms());
    s.logf(LogLevel::notice, "single-process mode: serving in pid %d", int(getpid()));
    if (!get_worker_ready(s.worker)) return s.fail("the init hook failed");
    become_ready(s);
    if (s.pool.result != 0) return -1;
    worker_loop(s.worker);
    s.logf(LogLevel::notice, "single-process mode: stopping");
    return 0;
}

// Gets the scoreboard, retrying every ipc_retry_interval while signals may
// still stop us. 0, or 1 when told to stop first.
PREFORK_COLD static int acquire_ipc(ServerState &s) {
    std::string why;
    while (s.run.board.create(s.config.options.single_process ? 1 : s.config.options.max_clients, &why, s.config.log) != 0) {
        s.logf(LogLevel::error, "cannot create the scoreboard: %s; retrying in %g s", why.c_str(),
               s.config.options.ipc_retry_interval);
        int64_t until = now_ms() + int64_t(s.config.options.ipc_retry_interval * 1000);
        for (int64_t now = now_ms(); now < until; now = now_ms()) {
            pollfd fd = {s.run.signal_pipe[0], POLLIN, 0};
            sys::poll(&fd, 1, int(until - now));
            bool stop = false;
            drain_pipe(s.run.signal_pipe[0], [&](unsigned char sig) { stop |= sig == SIGTERM || sig == SIGINT; });
            if (stop) return 1;
        }
    }
    Shared *shared = s.run.shared = detail::Access::shared(s.run.board);
    shared->min_spare = s.config.options.min_spare_servers;
    shared->max_spare = s.config.options.max_spare_servers;
    shared->max_clients = s.config.options.max_clients;
    shared->generation = s.pool.generation;
    return 0;
}

/* ---------------------------------------------------------------------------
   Server: the public face. */
PREFORK_COLD Server::Server(const Options &options) : state_(new ServerState) { state_->config.options = options; }

// Closes the listeners; a UNIX socket file is removed by run() only, since a
// Server that never ran may be a copy whose socket another process serves.
PREFORK_COLD Server::~Server() {
    for (Listener &l : state_->config.listeners) sys::close(l.fd);
}

// Fills in the address and port a listener really got (port 0 picks one).
PREFORK_COLD static int describe_listener(ServerState &s, Listener &l) {
    sockaddr_storage bound;
    memset(&bound, 0, sizeof bound);
    socklen_t length = sizeof bound;
    if (getsockname(l.fd, reinterpret_cast<sockaddr *>(&bound), &length) < 0)
        return s.fail(format("fd %d: getsockname: %s", l.fd, strerror(errno)));
    l.address = describe_address(reinterpret_cast<sockaddr *>(&bound), length, &l.port);
    return 0;
}

PREFORK_COLD int Server::listen(const std::string &spec) {
    ServerState &s = *state_;
    if (Listener *inherited = inherited_listener(s, spec)) {
        inherited->unclaimed = false;
        return 0;
    }
    if (spec.compare(0, 5, "unix:") == 0) return bind_unix(s, spec, spec.substr(5));
    if (bind_inet(s, spec) < 0) return -1;
    return describe_listener(s, s.config.listeners.back());
}

PREFORK_COLD int Server::listen_fd(int fd) {
    ServerState &s = *state_;
    int accepting = 0;
    socklen_t size = sizeof accepting;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size) < 0 || !accepting)
        return s.fail(format("fd %d is not a listening socket", fd));
    if (sys::set_flags(fd, true) < 0) return s.fail(format("fd %d: fcntl: %s", fd, strerror(errno)));
    Listener l;
    l.fd = fd;
    if (describe_listener(s, l) < 0) return -1;
    s.config.listeners.push_back(l);
    return 0;
}

size_t Server::listener_count() const { return state_->config.listeners.size(); }
std::string Server::address(size_t i) const { return state_->config.listeners.at(i).address; }
int Server::port(size_t i) const { return state_->config.listeners.at(i).port; }
void Server::on_connection(ConnectionHandler handler) { state_->config.handler = std::move(handler); }
void Server::on_refusal(ConnectionHandler handler) { state_->config.refusal = std::move(handler); }
void Server::on_reopen(std::function<void()> hook) { state_->config.reopen = std::move(hook); }
void Server::on_restart(std::function<void()> hook) { state_->config.restart = std::move(hook); }
void Server::on_ready(std::function<bool()> hook) { state_->config.ready = std::move(hook); }
void Server::on_worker_start(InitHook hook) { state_->config.hooks.push_back(std::move(hook)); }
void Server::on_log(LogFn log) { state_->config.log = std::move(log); }
PREFORK_COLD bool Server::is_child() const { return state_->worker.is_child; }
PREFORK_COLD Snapshot Server::snapshot() { return state_->run.board.snapshot(); }
PREFORK_COLD const Options &Server::options() const { return state_->config.options; }
PREFORK_COLD const std::string &Server::error() const { return state_->error; }

PREFORK_COLD void Server::log(LogLevel level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vlog(state_->config.log, level, fmt, args);
    va_end(args);
}

// libstdc++ binds its own calls on first use (without LD_BIND_NOW), writing
// its GOT: a first call in a worker costs that worker two private pages of
// libstdc++ and a page of stack for the resolver. Filling a string is the
// one such call LD_DEBUG=bindings showed a serving worker make (the file
// cache loading a copy), so the parent makes it once before it forks.
PREFORK_COLD static void bind_before_fork() {
    std::string s;
    // A size the compiler cannot fold, of 2 or more: one byte is stored
    // without memset, which would then stay unbound.
    s.resize(size_t(getpid() & 1) + 2);
}

PREFORK_COLD int Server::run() {
    ServerState &s = *state_;
    std::vector<std::string> notes;
    std::string bad = check_options(s.config.options, &notes);
    if (!bad.empty()) return s.fail(bad);
    for (const std::string &note : notes) s.logf(LogLevel::notice, "%s", note.c_str());
    if (s.config.listeners.empty()) return s.fail("no listener: call listen() before run()");
    for (const Listener &l : s.config.listeners)
        if (l.fd < 0) return s.fail("the listeners were closed by an earlier run()");
    if (!s.config.handler) return s.fail("no connection handler: call on_connection() before run()");
    if (signal_pipe_write_end >= 0) return s.fail("another Server is running in this process");
    if (sys::pipe(s.run.signal_pipe) < 0) return s.fail(format("pipe: %s", strerror(errno)));
    signal_pipe_write_end = s.run.signal_pipe[1];
    for (size_t i = 0; i < sizeof parent_signals / sizeof parent_signals[0]; i++)
        set_disposition(parent_signals[i], parent_signals[i] == SIGPIPE ? SIG_IGN : on_signal,
                        &s.saved_actions[i]);
    s.run.parent_pid = getpid();
    bind_before_fork();
    s.error.clear();
    s.pool.result = 0;

    int rc = 0;
    if (acquire_ipc(s) == 0) rc = s.config.options.single_process ? run_single(s) : run_pool(s);

    for (size_t i = 0; i < sizeof parent_signals / sizeof parent_signals[0]; i++)
        sigaction(parent_signals[i], &s.saved_actions[i], nullptr);
    signal_pipe_write_end = -1;
    int *fds[] = {&s.run.signal_pipe[0], &s.run.signal_pipe[1], &s.run.wake_pipe[0], &s.run.wake_pipe[1],
                  &s.run.life_pipe[0], &s.run.life_pipe[1], &s.takeover.fd, &s.upgrade.channel};
    for (int *fd : fds) {
        sys::close(*fd);
        *fd = -1;
    }
    close_backlog(s.pool);
    s.run.board.destroy();
    s.run.shared = nullptr;
    for (Listener &l : s.config.listeners) {
        sys::close(l.fd);
        l.fd = -1;
        if (!l.unix_path.empty()) unlink(l.unix_path.c_str());
        l.unix_path.clear();
    }
    return rc;
}

/* ---------------------------------------------------------------------------
   HTTP/1.1 request parser, pico-shaped: (buf, len) in, views into buf out,
   the caller's header array, bounded sizes, no allocation; "incomplete"
   (feed me more) is distinct from "malformed" (answer and close). Strict by
   design (RFC 9112): one SP between the request line's parts, no
   whitespace before a field's colon, no obs-fold, no control bytes in a
   field. A bare LF ends a line as CRLF does (RFC 9112 section 2.2 allows
   it); a CR not followed by LF does not. */
// RFC 9110 token bytes (ALPHA, DIGIT and !#$%&'*+-.^_`|~) as a bitmap of
// ASCII: a load and a shift, where a strchr() of the extras was a call per
// byte on every method and field name.
static bool is_tchar(unsigned char c) {
    static const uint32_t tokens[4] = {0x00000000, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff};
    return c < 128 && (tokens[c >> 5] >> (c & 31)) & 1;
}

// Field-value bytes: visible ASCII, obs-text, SP and HTAB.
static bool is_field_byte(unsigned char c) { return (c >= 0x20 && c != 0x7f) || c == '\t'; }

static const size_t max_method = 32;
static const size_t max_leading_empty_lines = 4;

static int malformed(int *status, int code) {
    *status = code;
    return http_malformed;
}

// The line end at p[at]: its length (2 for CRLF, 1 for LF), 0 when the
// bytes stop first, -1 for anything else.
static int line_end(const unsigned char *p, size_t len, size_t at) {
    if (at >= len) return 0;
    if (p[at] == '\n') return 1;
    if (p[at] != '\r') return -1;
    if (at + 1 >= len) return 0;
    return p[at + 1] == '\n' ? 2 : -1;
}

/* The steps of parse_request. Each parses one part of the head from
   buf[*at], moves *at past it and returns 0; or returns what parse_request
   would: http_incomplete, or http_malformed with *status set. */

// The empty lines a client may send before the request line (RFC 9112
// section 2.2), a few at most.
static int skip_empty_lines(const char *buf, size_t len, size_t *at, int *status) {
    const unsigned char *p = reinterpret_cast<const unsigned char *>(buf);
    size_t i = *at;
    for (size_t empty = 0; i < len && (p[i] == '\r' || p[i] == '\n'); empty++) {
        int n = line_end(p, len, i);
        if (n < 0 || empty == max_leading_empty_lines) return malformed(status, 400);
        if (n == 0) return http_incomplete;
        i += size_t(n);
    }
    *at = i;
    return 0;
}

// "method SP request-target SP HTTP/1.x", then a line end.
static int parse_request_line(const char *buf, size_t len, size_t *at, HttpRequest *request, int *status) {
    const unsigned char *p = reinterpret_cast<const unsigned char *>(buf);
    size_t i = *at;
    size_t method_start = i;
    while (i < len && is_tchar(p[i]) && i - method_start <= max_method) i++;
    if (i - method_start > max_method) return malformed(status, 400);
    if (i == len) return http_incomplete;
    if (i == method_start || p[i] != ' ') return malformed(status, 400);
    request->method = std::string_view(buf + method_start, i - method_start);

    size_t target_start = ++i;
    while (i < len && p[i] > 0x20 && p[i] != 0x7f) {
        if (i - target_start >= http_max_target) return malformed(status, 414);
        i++;
    }
    if (i == len) return http_incomplete;
    if (i == target_start || p[i] != ' ') return malformed(status, 400);
    request->target = std::string_view(buf + target_start, i - target_start);

    static const char version[] = "HTTP/1.x";
    size_t version_start = ++i;
    for (size_t k = 0; k < 8; k++, i++) {
        if (i == len) return http_incomplete;
        bool digit = p[i] >= '0' && p[i] <= '9';
        if (k == 5 || k == 7 ? !digit : p[i] != (unsigned char)version[k]) return malformed(status, 400);
    }
    int major = p[version_start + 5] - '0', minor = p[version_start + 7] - '0';
    int end = line_end(p, len, i);
    if (end < 0) return malformed(status, 400);
    if (end == 0) return http_incomplete;
    if (major != 1 || minor > 1) return malformed(status, 505);
    request->minor_version = minor;
    *at = i + size_t(end);
    return 0;
}

// One field line, "name:" OWS value OWS and a line end, into *field (the
// value without the whitespace around it). Called at a byte that does not
// end the head; http_incomplete leaves the block's bound to the caller.
static int parse_field(const char *buf, size_t len, size_t *at, HttpHeader *field, int *status) {
    const unsigned char *p = reinterpret_cast<const unsigned char *>(buf);
    size_t i = *at;
    if (p[i] == ' ' || p[i] == '\t') return malformed(status, 400);  // obs-fold
    size_t name_start = i;
    while (i < len && is_tchar(p[i])) i++;
    if (i == len) return http_incomplete;
    if (i == name_start || p[i] != ':') return malformed(status, 400);  // includes space before ':'
    size_t name_end = i++;
    while (i < len && (p[i] == ' ' || p[i] == '\t')) i++;
    size_t value_start = i;
    while (i < len && is_field_byte(p[i])) i++;
    int end = line_end(p, len, i);
    if (end < 0) return malformed(status, 400);  // NUL, a control byte, or a lone CR
    if (end == 0) return http_incomplete;
    size_t value_end = i;
    while (value_end > value_start && (p[value_end - 1] == ' ' || p[value_end - 1] == '\t')) value_end--;
    field->name = std::string_view(buf + name_start, name_end - name_start);
    field->value = std::string_view(buf + value_start, value_end - value_start);
    *at = i + size_t(end);
    return 0;
}

// The field lines and the empty line that ends the head, the fields into
// headers[0, max_headers) and their number into *count. The block is
// bounded (431) even while incomplete, so a client cannot trickle it on.
static int parse_fields(const char *buf, size_t len, size_t *at, HttpHeader *headers, size_t max_headers,
                        size_t *count, int *status) {
    const unsigned char *p = reinterpret_cast<const unsigned char *>(buf);
    size_t header_start = *at, i = *at;
    auto incomplete = [&] {
        return len - header_start > http_max_header_block ? malformed(status, 431) : int(http_incomplete);
    };
    for (;;) {
        if (i - header_start > http_max_header_block) return malformed(status, 431);
        int end = line_end(p, len, i);
        if (end > 0) {
            i += size_t(end);
            break;  // the empty line: the head is complete
        }
        if (i == len || (p[i] == '\r' && end == 0)) return incomplete();
        HttpHeader field;
        int rc = parse_field(buf, len, &i, &field, status);
        if (rc == http_incomplete) return incomplete();
        if (rc < 0) return rc;
        if (*count == max_headers) return malformed(status, 431);
        headers[(*count)++] = field;
    }
    if (i - header_start > http_max_header_block + 2) return malformed(status, 431);
    *at = i;
    return 0;
}

int parse_request(const char *buf, size_t len, HttpRequest *request, HttpHeader *headers,
                  size_t max_headers, int *status) {
    size_t at = 0, count = 0;
    int rc = skip_empty_lines(buf, len, &at, status);
    if (rc == 0) rc = parse_request_line(buf, len, &at, request, status);
    if (rc == 0) rc = parse_fields(buf, len, &at, headers, max_headers, &count, status);
    if (rc < 0) return rc;
    request->headers = headers;
    request->header_count = count;
    return int(at);
}

static char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? char(c + ('a' - 'A')) : c; }

static bool equals_nocase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++)
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

// Calls f(token) for each comma-separated element of a field value,
// trimmed; empty elements are skipped (RFC 9110 section 5.6.1).
template <class F> static void for_each_token(std::string_view value, F f) {
    while (!value.empty()) {
        size_t comma = value.find(',');
        std::string_view item = value.substr(0, comma);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
        if (!item.empty()) f(item);
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
}

// uri-host [ ":" port ], with uri-host a reg-name or a bracketed IP literal.
static bool valid_host(std::string_view host) {
    size_t i = 0;
    if (!host.empty() && host[0] == '[') {
        size_t close = host.find(']');
        if (close == std::string_view::npos || close == 1) return false;
        for (i = 1; i < close; i++) {
            char c = host[i];
            if (!isxdigit((unsigned char)c) && c != ':' && c != '.') return false;
        }
        i = close + 1;
    } else {
        // reg-name bytes (ALPHA, DIGIT and -._~!$&'()*+,;=%) as a bitmap, as
        // in is_tchar: this runs on every byte of every request's Host
        static const uint32_t allowed[4] = {0x00000000, 0x2bff7ff2, 0x87fffffe, 0x47fffffe};
        while (i < host.size() && host[i] != ':') {
            unsigned char c = (unsigned char)host[i++];
            if (c >= 128 || !((allowed[c >> 5] >> (c & 31)) & 1)) return false;
        }
    }
    if (i == host.size()) return true;
    if (host[i] != ':') return false;
    std::string_view port = host.substr(i + 1);
    if (port.size() > 5) return false;
    for (char c : port)
        if (c < '0' || c > '9') return false;
    return true;
}

int check_request(const HttpRequest &request, HttpRequestInfo *info, int *status) {
    *info = HttpRequestInfo();
    info->keep_alive = request.minor_version == 1;
    int hosts = 0;
    bool has_transfer_encoding = false, bad = false;
    for (size_t i = 0; i < request.header_count; i++) {
        std::string_view name = request.headers[i].name, value = request.headers[i].value;
        if (equals_nocase(name, "host")) {
            hosts++;
            info->host = value;
            bad |= !valid_host(value);
        } else if (equals_nocase(name, "content-length")) {
            // 1*DIGIT; a repeated field must say the same (RFC 9112 6.3).
            uint64_t n = 0;
            bad |= value.empty() || value.size() > 18;
            for (char c : value) {
                bad |= c < '0' || c > '9';
                n = n * 10 + uint64_t(c - '0');
            }
            bad |= info->has_content_length && n != info->content_length;
            info->has_content_length = true;
            info->content_length = n;
        } else if (equals_nocase(name, "transfer-encoding")) {
            if (has_transfer_encoding) bad = true;  // one field, one coding: chunked
            has_transfer_encoding = true;
            int codings = 0;
            for_each_token(value, [&](std::string_view coding) {
                codings++;
                info->chunked = equals_nocase(coding, "chunked");
            });
            if (codings != 1 || !info->chunked) {
                *status = codings == 0 ? 400 : 501;
                return http_malformed;
            }
        } else if (equals_nocase(name, "connection")) {
            for_each_token(value, [&](std::string_view option) {
                if (equals_nocase(option, "close")) info->keep_alive = false;
                else if (equals_nocase(option, "keep-alive") && request.minor_version == 0)
                    info->keep_alive = true;
            });
        } else if (equals_nocase(name, "expect")) {
            info->expect_continue = equals_nocase(value, "100-continue");
        }
    }
    // Framing that two parties could read two ways is where request
    // smuggling lives: refuse it outright.
    bad |= has_transfer_encoding && (info->has_content_length || request.minor_version == 0);
    bad |= hosts > 1 || (request.minor_version == 1 && hosts == 0);
    if (bad) {
        *status = 400;
        info->keep_alive = false;
        return http_malformed;
    }
    return 0;
}

/* The chunked coding (RFC 9112 section 7.1), decoded a byte at a time so
   that a body may arrive in any pieces. Each state names what the decoder
   waits for; the chunk-size line's come first. */
enum ChunkedState : int {
    chunk_size, chunk_extension, chunk_size_lf,  // "1a;ext\r\n"
    chunk_data, chunk_data_cr, chunk_data_lf,    // the data, then "\r\n"
    trailer_start, trailer_line, final_lf,       // after the "0" chunk: "Field: v\r\n" ... "\r\n"
    chunked_done
};

static const size_t max_chunk_line = 4096;  // an extension, a trailer field

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = char(tolower((unsigned char)c));
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// Takes byte ch of a chunk-size line: hex digits (the size, into
// remaining; line counts the line's bytes), then ";extension" or CRLF.
// 0, or http_malformed (*too_large when the size would take a body of
// body_size bytes past max_body).
PREFORK_COLD static int take_size_line_byte(int &state, char ch, uint64_t &remaining, size_t &line, size_t body_size,
                               size_t max_body, bool *too_large) {
    if (state == chunk_size) {
        int digit = hex_value(ch);
        if (digit >= 0) {
            remaining = remaining * 16 + uint64_t(digit);
            if (++line > 16) return http_malformed;
            if (body_size + remaining > max_body) {
                *too_large = true;
                return http_malformed;
            }
        } else if (line == 0) {
            return http_malformed;  // a chunk size needs a digit
        } else if (ch == ';') {
            state = chunk_extension;
        } else if (ch == '\r') {
            state = chunk_size_lf;
        } else {
            return http_malformed;  // CRLF only: a bare LF here is how smuggling starts
        }
    } else if (state == chunk_extension) {
        if (ch == '\r') state = chunk_size_lf;
        else if (ch == '\n') return http_malformed;
        else if ((unsigned char)ch < 0x20 && ch != '\t') return http_malformed;
        if (++line > max_chunk_line) return http_malformed;
    } else {  // chunk_size_lf
        if (ch != '\n') return http_malformed;
        state = remaining ? chunk_data : trailer_start;
    }
    return 0;
}

// Takes byte ch of the CRLF after a chunk's data, or of the trailer
// section after the last chunk (line counts a trailer line's bytes).
// 0, or http_malformed.
PREFORK_COLD static int take_chunk_end_byte(int &state, char ch, size_t &line) {
    switch (state) {
    case chunk_data_cr:
        if (ch != '\r') return http_malformed;
        state = chunk_data_lf;
        break;
    case chunk_data_lf:
        if (ch != '\n') return http_malformed;
        state = chunk_size;
        line = 0;
        break;
    case trailer_start:
        line = 0;
        if (ch == '\r') state = final_lf;
        else if (ch == '\n') return http_malformed;
        else state = trailer_line;
        break;
    case trailer_line:
        if (ch == '\n') state = trailer_start;
        else if ((unsigned char)ch < 0x20 && ch != '\t' && ch != '\r') return http_malformed;
        if (++line > max_chunk_line) return http_malformed;
        break;
    case final_lf:
        if (ch != '\n') return http_malformed;
        state = chunked_done;
        break;
    }
    return 0;
}

PREFORK_COLD long ChunkedDecoder::feed(const char *in, size_t len, std::string *out, size_t max_body, bool *too_large) {
    *too_large = false;
    size_t i = 0;
    while (i < len && state_ != chunked_done) {
        if (state_ == chunk_data) {  // as much of the chunk as is there, at once
            size_t n = size_t(std::min<uint64_t>(remaining_, len - i));
            out->append(in + i, n);
            remaining_ -= n;
            i += n;
            if (remaining_ == 0) state_ = chunk_data_cr;
            continue;
        }
        int rc = state_ < chunk_data
                     ? take_size_line_byte(state_, in[i], remaining_, line_, out->size(), max_body, too_large)
                     : take_chunk_end_byte(state_, in[i], line_);
        if (rc < 0) return rc;
        i++;
    }
    return long(i);
}

bool ChunkedDecoder::done() const { return state_ == chunked_done; }

/* ---------------------------------------------------------------------------
   HTTP responder. One HttpService per program; in a worker it serves one
   connection at a time: read a head (within request_timeout), check its
   framing, read or decode the body, route, answer, and go round again on a
   kept-alive connection, with pipelined bytes already in the buffer. The
   buffers live in the service and are reused, so a warm worker allocates
   nothing per request; the Date field is formatted once a second. */
bool percent_decode(std::string_view in, std::string *out) {
    out->clear();
    for (size_t i = 0; i < in.size(); i++) {
        if (in[i] == '\0') return false;  // raw, as encoded: a C string would end there
        if (in[i] != '%') {
            *out += in[i];
            continue;
        }
        if (i + 2 >= in.size()) return false;  // "%" or "%a" at the end
        int high = hex_value(in[i + 1]), low = hex_value(in[i + 2]);
        if (high < 0 || low < 0 || (high == 0 && low == 0)) return false;
        *out += char(high * 16 + low);
        i += 2;
    }
    return true;
}

// RFC 9110 section 15's reason phrases, and RFC 6585's 429 and 431: each
// entry is the code's three digits, then its phrase, NUL-terminated; an
// empty entry ends the table. One string, not a switch, for size.
static const char reason_table[] =
    "100Continue\0" "101Switching Protocols\0" "200OK\0" "201Created\0" "202Accepted\0"
    "203Non-Authoritative Information\0" "204No Content\0" "205Reset Content\0" "206Partial Content\0"
    "300Multiple Choices\0" "301Moved Permanently\0" "302Found\0" "303See Other\0" "304Not Modified\0"
    "305Use Proxy\0" "307Temporary Redirect\0" "308Permanent Redirect\0" "400Bad Request\0"
    "401Unauthorized\0" "402Payment Required\0" "403Forbidden\0" "404Not Found\0"
    "405Method Not Allowed\0" "406Not Acceptable\0" "407Proxy Authentication Required\0"
    "408Request Timeout\0" "409Conflict\0" "410Gone\0" "411Length Required\0" "412Precondition Failed\0"
    "413Content Too Large\0" "414URI Too Long\0" "415Unsupported Media Type\0"
    "416Range Not Satisfiable\0" "417Expectation Failed\0" "421Misdirected Request\0"
    "422Unprocessable Content\0" "426Upgrade Required\0" "428Precondition Required\0"
    "429Too Many Requests\0" "431Request Header Fields Too Large\0" "500Internal Server Error\0"
    "501Not Implemented\0" "502Bad Gateway\0" "503Service Unavailable\0" "504Gateway Timeout\0"
    "505HTTP Version Not Supported\0";

const char *http_reason(int status) {
    if (status < 100 || status > 599) return "";
    char code[3] = {char('0' + status / 100), char('0' + status / 10 % 10), char('0' + status % 10)};
    for (const char *entry = reason_table; *entry; entry += strlen(entry) + 1)
        if (memcmp(entry, code, 3) == 0) return entry + 3;
    return "";
}

std::string_view HttpContext::header(std::string_view name) const {
    for (size_t i = 0; i < header_count; i++)
        if (equals_nocase(headers[i].name, name)) return headers[i].value;
    return std::string_view();
}

// A query's name or value, application/x-www-form-urlencoded: "+" is a
// space (a "%2B" stays a plus), then percent-decoding.
PREFORK_COLD static bool form_decode(std::string_view in, std::string *out) {
    std::string spaced(in);
    std::replace(spaced.begin(), spaced.end(), '+', ' ');
    return percent_decode(spaced, out);
}

PREFORK_COLD bool HttpContext::param(std::string_view name, std::string *value) const {
    std::string key;
    for (std::string_view rest = query; !rest.empty();) {
        size_t amp = rest.find('&');
        std::string_view pair = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
        size_t equals = pair.find('=');
        std::string_view raw_value = equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1);
        if (form_decode(pair.substr(0, equals), &key) && key == name && form_decode(raw_value, value)) return true;
    }
    value->clear();
    return false;
}

// The client's address as text: no port, no brackets; "unix" over a UNIX
// socket, "" when the worker does not know it.
PREFORK_COLD static std::string peer_text(const Worker &worker) {
    if (!worker.peer_length()) return std::string();
    int port = 0;
    std::string address =
        describe_address(reinterpret_cast<const sockaddr *>(&worker.peer()), worker.peer_length(), &port);
    if (address.compare(0, 5, "unix:") == 0) return "unix";
    if (port && address.rfind(':') != std::string::npos) address.erase(address.rfind(':'));
    if (address.size() > 2 && address.front() == '[') address = address.substr(1, address.size() - 2);
    return address;
}

PREFORK_COLD std::string HttpContext::peer() const { return worker ? peer_text(*worker) : std::string(); }

// Whether the client has closed its side or reset the connection; bytes
// it sent (a pipelined request) stay where they are.
static bool client_gone(int fd) {
    char byte;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

bool HttpContext::client_gone() const { return fd >= 0 && prefork::client_gone(fd); }

// How a response's body is delimited: not at all (a bodiless status),
// by Content-Length, by chunks (a stream in HTTP/1.1) or by the close (a
// stream in HTTP/1.0).
enum class Framing : uint8_t { none, length, chunked, close };

/* Streaming (HttpResponse::write). The head goes out with the first
   write, framed for a length nobody knows yet: chunked in HTTP/1.1,
   delimited by the close in HTTP/1.0; then each write is sent at once, as
   a chunk, with what body() buffered before it. Every write has its own
   send_timeout and min_rate, so a producer may be as slow as it likes and
   only the client's stalls count. A stream gives way when the worker should
   stop, even in the middle of a blocked send: a handler writing in a loop
   ends then, instead of holding a restart until graceful_timeout's SIGKILL.
   A cut stream never gets its last chunk, so an HTTP/1.1 client can tell it
   from a whole one. */
struct ServiceState;
struct Link;

struct detail::ResponseStream {
    ServiceState *in;
    const HttpOptions *options;
    Link *link;
    Worker *worker;
    bool head_only;         // a HEAD request: the head alone
    bool keep_alive;        // the request allows another after it
    int minor_version;
    bool raw = false;       // the handler's bytes are the response, head and all (nph- CGI)
    bool started = false;   // the head went out
    bool cut = false;       // a write failed or was refused: the connection closes
    int status = 0;         // the status that went out
    Framing framing = Framing::none;
    uint64_t body_bytes = 0, sent = 0;  // the body's bytes (for the log); all bytes sent
};
using detail::ResponseStream;

// The fields the responder owns: a handler's framing (Content-Length,
// Transfer-Encoding) or Connection beside the responder's own would let a
// proxy read the response two ways (-1: refused). Date (1) and Server (2)
// a handler's one replaces, once. 0 for the others, mostly told apart by
// length alone.
enum : int { field_date = 1, field_server = 2 };

static int own_field(std::string_view name) {
    switch (name.size()) {
    case 4: return equals_nocase(name, "date") ? field_date : 0;
    case 6: return equals_nocase(name, "server") ? field_server : 0;
    case 10: return equals_nocase(name, "connection") ? -1 : 0;
    case 14: return equals_nocase(name, "content-length") ? -1 : 0;
    case 17: return equals_nocase(name, "transfer-encoding") ? -1 : 0;
    }
    return 0;
}

bool HttpResponse::header(std::string_view name, std::string_view value) {
    int own = own_field(name);
    if (name.empty() || own < 0 || (replaced_ & own) || (stream_ && stream_->started)) return false;
    for (char ch : name)
        if (!is_tchar((unsigned char)ch)) return false;
    for (char ch : value)
        if (ch == '\r' || ch == '\n' || ch == '\0') return false;
    replaced_ |= uint8_t(own);
    fields_.append(name.data(), name.size());
    fields_ += ": ";
    fields_.append(value.data(), value.size());
    fields_ += "\r\n";
    return true;
}

void HttpResponse::file(int fd, uint64_t offset, uint64_t length) {
    if (file_fd_ >= 0 && !file_borrowed_) sys::close(file_fd_);
    file_borrowed_ = false;
    file_fd_ = fd;
    file_offset_ = offset;
    file_length_ = length;
    file_regular_ = false;
}

// The responder's side of an HttpResponse, which a handler does not see:
// what the handler set, read back to send it, and the reset between
// requests. HttpResponse's one friend.
struct HttpResponder {
    static void reset(HttpResponse &r) {
        r.status_ = 200;
        r.close_ = false;
        r.replaced_ = 0;
        r.fields_.clear();
        r.body_.clear();
        r.file(-1, 0, 0);
    }
    static void reserve(HttpResponse &r, size_t fields, size_t body) {
        r.fields_.reserve(fields);
        r.body_.reserve(body);
    }
    static std::string &body(HttpResponse &r) { return r.body_; }
    static const std::string &body(const HttpResponse &r) { return r.body_; }
    static const std::string &fields(const HttpResponse &r) { return r.fields_; }
    // Fields made by the responder, which need none of header()'s checks.
    static void set_fields(HttpResponse &r, std::string_view fields) { r.fields_.assign(fields.data(), fields.size()); }
    static bool closing(const HttpResponse &r) { return r.close_; }
    static bool replaced(const HttpResponse &r, int field) { return r.replaced_ & field; }
    static int file_fd(const HttpResponse &r) { return r.file_fd_; }
    static detail::ResponseStream *stream(HttpResponse &r) { return r.stream_; }
    static void attach(HttpResponse &r, detail::ResponseStream *stream) { r.stream_ = stream; }
    // A file the caller has already fstat'ed and found regular (static files).
    static void regular_file(HttpResponse &r, int fd, uint64_t offset, uint64_t length) {
        r.file(fd, offset, length);
        r.file_regular_ = true;
    }
    // The same, from the file cache, which keeps fd open.
    static void borrowed_file(HttpResponse &r, int fd, uint64_t offset, uint64_t length) {
        regular_file(r, fd, offset, length);
        r.file_borrowed_ = true;
    }
    // Whether the file, if any, can be sent: a pipe or a socket has no
    // length to promise in Content-Length, and would send it and then nothing.
    static bool file_sendable(const HttpResponse &r) {
        struct stat st;
        return r.file_fd_ < 0 || r.file_regular_ || (fstat(r.file_fd_, &st) == 0 && S_ISREG(st.st_mode));
    }
    static uint64_t file_offset(const HttpResponse &r) { return r.file_offset_; }
    static uint64_t file_length(const HttpResponse &r) { return r.file_length_; }
    // The body's length: the file's part when there is a file, else the buffer's.
    static uint64_t body_length(const HttpResponse &r) {
        return r.file_fd_ >= 0 ? r.file_length_ : uint64_t(r.body_.size());
    }
    static bool has_field(const HttpResponse &r, std::string_view name) {
        const std::string &fields = r.fields_;
        size_t at = 0;
        while (at < fields.size()) {
            size_t colon = fields.find(':', at);
            if (colon == std::string::npos) break;
            if (equals_nocase(std::string_view(fields).substr(at, colon - at), name)) return true;
            at = fields.find('\n', colon) + 1;
            if (at == 0) break;
        }
        return false;
    }
};

struct Route {
    std::string method;
    std::string pattern;       // as given, for the log
    regex_t regex;
    HttpHandler handler;
    bool literal = false;      // the regex is "^text" or "^text$": compare, no regexec
    bool exact = false;        // ... and it ends in "$"
    std::string text;
};

// Reads "^text" or "^text$" where text is letters, digits, "/-_~%,;:=@!&"
// and backslash-escaped specials: such a route is matched by comparing
// strings. Most routes are of that kind, and regexec() was the biggest
// user-space cost of a small request.
// The characters POSIX extended regexes give a meaning to.
static const char regex_specials[] = ".[]{}()\\*+?^$|";

static bool literal_regex(const std::string &regex, std::string *text, bool *exact) {
    if (regex.empty() || regex[0] != '^') return false;
    text->clear();
    *exact = false;
    for (size_t i = 1; i < regex.size(); i++) {
        char c = regex[i];
        if (isalnum((unsigned char)c) || (c && strchr("/-_~%,;:=@!&", c))) *text += c;
        else if (c == '\\' && i + 1 < regex.size() && regex[i + 1] && strchr(regex_specials, regex[i + 1]))
            *text += regex[++i];
        else if (c == '$' && i + 1 == regex.size()) *exact = true;
        else return false;
    }
    return true;
}

static bool route_matches(Route &route, const std::string &path, regmatch_t *matches) {
    if (!route.literal) return regexec(&route.regex, path.c_str(), 10, matches, 0) == 0;
    matches[1].rm_so = -1;  // no groups
    return route.exact ? path == route.text : path.compare(0, route.text.size(), route.text) == 0;
}

static void append_number(std::string &out, uint64_t value, int base = 10) {
    char digits[24];
    out.append(digits, size_t(std::to_chars(digits, digits + sizeof digits, value, base).ptr - digits));
}

// A clock face redrawn once a second: the Date field and the access log's
// stamp are formatted per second, not per request.
// gmtime_r without glibc's time zone lock, whose word is in libc's data: a
// worker that wrote it for every Date would keep its own copy of that page.
// Days since 1970 become a date in 400-year eras of 146,097 days, each
// counted from 1 March so that the leap day ends the year. Times before
// year 1000 or after 9999 are clamped to those years' ends (an HTTP date
// has four digits for the year).
PREFORK_COLD static void utc_time(time_t t, struct tm &tm) {
    const int64_t year_0 = -62167219200LL, lowest = -30610224000LL, highest = 253402300799LL;
    int64_t clamped = t < lowest ? lowest : t > highest ? highest : int64_t(t);
    int days = int((clamped - year_0) / 86400) - 719528, secs = int((clamped - year_0) % 86400);
    tm = {};
    tm.tm_hour = secs / 3600;
    tm.tm_min = secs / 60 % 60;
    tm.tm_sec = secs % 60;
    tm.tm_wday = (days + 719528 + 6) % 7;  // 1 January of year 0 was a Saturday
    int era_day = days + 719468 + 146097;  // days since 1 March of year -400
    int era = era_day / 146097;
    int day_of_era = era_day % 146097;
    int year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    int day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    int month = (5 * day_of_year + 2) / 153;  // 0 is March
    tm.tm_mday = day_of_year - (153 * month + 2) / 5 + 1;
    tm.tm_mon = month < 10 ? month + 2 : month - 10;
    int year = year_of_era + (era - 1) * 400 + (tm.tm_mon < 2);
    tm.tm_year = year - 1900;
    bool leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    tm.tm_yday = day_of_year >= 306 ? day_of_year - 306 : day_of_year + 59 + leap;
}

struct CachedTime {
    time_t second = -1;
    char text[40] = "";
    const char *at(time_t now, const char *pattern, bool local) {
        if (now != second) {
            struct tm tm;
            if (local) localtime_r(&now, &tm);
            else utc_time(now, tm);
            strftime(text, sizeof text, pattern, &tm);
            second = now;
        }
        return text;
    }
};

static const char http_date_pattern[] = "%a, %d %b %Y %H:%M:%S GMT";

// A path prefix behind Basic auth (require_auth): its password file and
// the WWW-Authenticate value of its 401.
struct AuthZone {
    std::string prefix, challenge;
    PasswordFile passwords;
};

// What an HttpService holds: its routes and docroots, and the buffers
// reused from one request to the next. The helpers below take it by this
// name; HttpService::Internals, private in the header, is only its shell.
/* The file cache. A worker keeps the files it serves, each copy (the file,
   NAME.br, NAME.gz) with the fields of its answer made once: a copy of up
   to cache_file_max bytes in memory, a bigger one as its open descriptor.
   A request for a small file is then answered without opening, stat'ing or
   reading anything, in one recv and one send; for a bigger one sendfile
   follows. An entry is loaded again from the disk once it is a second
   old, through the same checks as at first, so a file changed, replaced,
   removed or made unreadable is served as it is within a second.
   HttpOptions::file_cache bounds the bytes the entries hold, at most
   cache_entries_max are kept, and the least recently used makes room.
   The entries lie one after another in one store of that many bytes,
   made with the service, before the fork: a worker's cache costs it the
   pages its entries fill and no malloc, whose free lists and arena are
   pages a worker would otherwise make its own. An entry is a CachedFile,
   its path, then each copy's fields and bytes, found by offsets from the
   entry's start, so that it moves by memmove when one before it goes. */
static const size_t cache_file_max = 16384;
static const size_t cache_entries_max = 64;
// The largest store: room for 64 entries of three 16 KiB copies each, with
// their paths and fields. A bigger file_cache could never be filled.
static const size_t cache_store_max = 4 << 20;

struct CachedCopy {
    bool exists = false;
    int fd = -1;                 // a copy over cache_file_max: sent from here
    uint64_t size = 0;
    uint32_t content_at = 0;     // else the copy itself, at this offset in the entry
    uint32_t fields_at = 0;      // Vary, ETag, Last-Modified (a 304's), then Content-Type, ...
    uint32_t fields_size = 0;
    uint32_t validators = 0;     // the length of a 304's part of the fields
    char etag[48];
    char modified[sizeof CachedTime::text];  // Last-Modified's value
    time_t mtime = 0;
};

struct CachedFile {
    size_t mount = 0;
    size_t path_size = 0;  // the path as requested (ctx.path: "/static" is not "/static/") follows
    CachedCopy copies[3];  // the file, NAME.br, NAME.gz
    int64_t loaded_ms = 0;
    uint64_t used = 0;     // in.cache_clock when last served
    size_t bytes = 0;      // the entry's length in the store, a multiple of alignof(CachedFile)
    std::string_view at(size_t offset, size_t length) const {
        return {reinterpret_cast<const char *>(this) + offset, length};
    }
    std::string_view path() const { return at(sizeof *this, path_size); }
    std::string_view content(const CachedCopy &c) const { return at(c.content_at, size_t(c.size)); }
    std::string_view fields(const CachedCopy &c) const { return at(c.fields_at, c.fields_size); }
};
static_assert(std::is_trivially_copyable<CachedFile>::value, "entries move by memmove");

struct ServiceState {
    std::vector<std::unique_ptr<Route>> routes;  // by pointer: growing the list moves no Route
    std::string in;      // bytes read from the connection
    std::string out;     // the response head being built
    std::string body;    // a decoded chunked body
    std::string path;    // the decoded path, NUL-terminated for regexec
    HttpHeader headers[http_max_headers];
    HttpResponse response;
    HttpContext context;
    regmatch_t matches[10];
    std::vector<int> roots;  // docroot directories, opened once
    CachedTime date;         // "Tue, 15 Nov 1994 08:12:31 GMT"
    CachedTime log_time;     // "22/Nov/2026:18:56:08 +0000"
    std::string log;         // access log lines not yet written
    char peer[64] = "-";     // the client's address, once per connection
    bool linger = false;     // a request was refused: drain the client before closing
    std::vector<std::string> prefixes;  // serve_directory's: the files beneath roots[i] answer
                                        // the paths under prefixes[i] ("/", "/static/")
    CachedTime mtime;                   // a file's Last-Modified
    std::function<void(const HttpContext *, int, HttpResponse &)> render_error;  // on_error's
    bool library_answer = false;  // answer_status() set the response: render_answer() gives its body
    std::vector<int> cgi_dirs;    // serve_cgi's directories
    std::vector<std::string> cgi_prefixes;  // ... and their prefixes
    struct AccessRule {
        std::string prefix;
        AddressRange range;
        bool allow;
    };
    std::vector<AccessRule> access;  // allow_from's and deny_from's, in order
    std::string document_root;    // the directory served at "/", absolute: CGI's DOCUMENT_ROOT
    std::vector<std::unique_ptr<AuthZone>> auth_zones;  // require_auth()'s prefixes
    std::string remote_user;           // whom this request authenticated as ("": nobody), for the log
    std::unique_ptr<char[]> cache_store;  // the file cache: its entries, one after another
    size_t cache_capacity = 0;            // the store's bytes (0: no cache)
    size_t cache_used = 0;                // what the entries take, from the store's start
    size_t cached = 0;                    // how many there are
    uint64_t cache_clock = 0;             // counts the answers it gave (for CachedFile::used)
    ~ServiceState();
};

struct HttpService::Internals : ServiceState {};

PREFORK_COLD HttpService::HttpService(const HttpOptions &options) : options_(options), in_(new Internals) {
    in_->in.reserve(32768);
    in_->out.reserve(1024);
    // Room for the fields and the body of a cached file's answer: a worker
    // answering from its cache then never calls malloc, whose free lists
    // and arena are pages it would otherwise make its own. Not written here,
    // nor the store's: a page is a worker's once it fills it.
    HttpResponder::reserve(in_->response, 1024, cache_file_max);
    size_t store = std::min(options.file_cache, cache_store_max) / alignof(CachedFile) * alignof(CachedFile);
    if (store) in_->cache_store.reset(new (std::nothrow) char[store]);
    in_->cache_capacity = in_->cache_store ? store : 0;  // no memory for it: no cache
}

PREFORK_COLD HttpService::~HttpService() {
    for (auto &route : in_->routes) regfree(&route->regex);
    for (int fd : in_->roots) sys::close(fd);
    for (int fd : in_->cgi_dirs) sys::close(fd);
}

// "*", or a method as requests spell them: a token without lowercase
// letters (methods are case-sensitive, and a request's "get" is not GET).
static bool valid_route_method(const std::string &method) {
    if (method.empty()) return false;
    for (char ch : method)
        if (!is_tchar((unsigned char)ch) || (ch >= 'a' && ch <= 'z')) return false;
    return true;
}

PREFORK_COLD int HttpService::route(const std::string &method, const std::string &path_regex, HttpHandler handler) {
    std::unique_ptr<Route> route(new Route);
    const char *refusal = !valid_route_method(method) ? "the method must be \"*\" or an uppercase token"
                          : !handler                  ? "no handler"
                                                      : nullptr;
    char why[256];
    int rc = refusal ? 0 : regcomp(&route->regex, path_regex.c_str(), REG_EXTENDED);
    if (rc != 0) {
        regerror(rc, &route->regex, why, sizeof why);
        refusal = why;
    } else if (!refusal && route->regex.re_nsub > 9) {
        regfree(&route->regex);
        refusal = "over 9 groups";
    }
    if (refusal) {
        error_ = format("bad route %s %s: %s", method.c_str(), path_regex.c_str(), refusal);
        return -1;
    }
    route->method = method;
    route->pattern = path_regex;
    route->handler = std::move(handler);
    route->literal = literal_regex(path_regex, &route->text, &route->exact);
    in_->routes.push_back(std::move(route));
    return 0;
}

/* Pacing: a worker belongs to whoever holds its connection, so every wait
   on a client is bounded, and bounded harder when other clients need the
   worker. A phase - a request head, a body, a response - may stall at most
   `timeout` between two moves and must average `min_rate` bytes a second
   once its first `timeout` is spent; a head (rate 0) must be whole within
   `timeout`. While the pool is full (no idle worker, max_clients reached),
   `timeout` shrinks to pressure_timeout: a client too slow to earn its
   worker then gives it up to the ones waiting in the listen queue, and a
   slowloris or a slow body holds a worker for well under a second. A real
   client on a slow link keeps moving, and keeps its worker either way
   (mod_reqtimeout's MinRate idea, plus the pressure). */
struct Pace {
    int64_t start_ms = 0, last_ms = 0;  // its clock's start (0: not started); its last move
    uint64_t bytes = 0;                 // moved since the clock started
    double timeout = 0, min_rate = 0;
};

// A client's socket. Its timeouts are set only when a call first has to
// wait, so a request that has already arrived and an answer that fits in
// the socket buffer (most of them) cost no setsockopt() at all. A blocked
// call gives up every tick to look at the clock and the pool.
struct Link {
    int fd = -1;
    Worker *worker = nullptr;  // asked whether the pool is full
    int tick_ms = 100;
    double send_timeout = 30;        // a response's Pace
    double min_rate = 500;
    double pressure_timeout = 0.5;
    bool reads_wait = false;         // SO_RCVTIMEO is set: reads may block
    bool sends_wait = false;         // SO_SNDTIMEO is set: sends may block
    bool gives_way = false;          // a stream: a send gives up when the worker should stop
    Pace sending;
};

// A phase's clock starts when it may first have to wait (start_pace): a
// request that has arrived and an answer that the socket buffer takes,
// most of them, never read the clock for their pace.
static void begin_pace(Pace &pace, double timeout, double min_rate) {
    pace.start_ms = 0;
    pace.timeout = timeout;
    pace.min_rate = min_rate;
}

static void start_pace(Pace &pace) {
    if (pace.start_ms) return;
    pace.start_ms = pace.last_ms = now_ms();
    pace.bytes = 0;
}

static void paced(Pace &pace, size_t bytes) {
    if (!pace.start_ms) return;
    pace.bytes += bytes;
    pace.last_ms = now_ms();
}

// Whether the phase has taken too long, as of now (the pool's state counts).
// In double, so that no timeout or rate, however odd, overflows.
static bool pace_spent(const Link &link, const Pace &pace) {
    if (!pace.start_ms) return false;
    double timeout = pace.timeout;
    if (link.worker && link.worker->pool_full()) timeout = std::min(timeout, link.pressure_timeout);
    double base = timeout * 1000, now = double(now_ms());
    double by_rate = double(pace.start_ms) + base;
    if (pace.min_rate > 0) by_rate += double(pace.bytes) * 1000 / pace.min_rate;
    return now >= double(pace.last_ms) + base || now >= by_rate;
}

static void set_socket_timeout(int fd, int option, double seconds) {
    timeval limit = {time_t(seconds), suseconds_t((seconds - double(time_t(seconds))) * 1e6)};
    setsockopt(fd, SOL_SOCKET, option, &limit, sizeof limit);
}

// Reads what is there into in, waiting at most a tick for it. > 0 bytes
// read, 0 at EOF, -1 with errno EAGAIN when nothing came, else -1.
static long read_some(Link &link, std::string &in) {
    // A head comes through a 1 KiB chunk on the stack, appended once it
    // came: growing the string instead would zero-fill (and so dirty) pages
    // no byte reaches, and a bigger chunk would take the worker's stack a
    // page deeper, a page it would then own. Once a kilobyte is waiting (a
    // long head, a body), reads go straight into the string, 16 KiB at a time.
    char chunk[1024];
    for (;;) {
        size_t used = in.size();
        ssize_t n;
        if (used < sizeof chunk) {
            n = sys::receive(link.fd, chunk, sizeof chunk, link.reads_wait);
            if (n > 0) in.append(chunk, size_t(n));
        } else {
            in.resize(used + 16384);
            n = sys::receive(link.fd, &in[used], 16384, link.reads_wait);
            in.resize(n > 0 ? used + size_t(n) : used);
        }
        if (n >= 0) return long(n);
        if (errno == EWOULDBLOCK || errno == EINTR) errno = EAGAIN;
        if (errno != EAGAIN || link.reads_wait) return -1;
        set_socket_timeout(link.fd, SO_RCVTIMEO, link.tick_ms / 1000.0);
        link.reads_wait = true;
    }
}

// Reads what comes next of a paced phase. > 0 bytes read, 0 at EOF, -1
// when the client is too slow (errno ETIMEDOUT) or the read failed. The
// pace is looked at before every read, not only after a tick of silence:
// a client that sends a byte every few milliseconds is never silent.
static long read_paced(Link &link, std::string &in, Pace &pace) {
    start_pace(pace);  // called when the phase is not whole yet: it may wait
    for (;;) {
        if (pace.bytes && pace_spent(link, pace)) {
            errno = ETIMEDOUT;
            return -1;
        }
        long n = read_some(link, in);
        if (n > 0) paced(pace, size_t(n));
        if (n >= 0 || errno != EAGAIN) return n;
        if (pace_spent(link, pace)) {
            errno = ETIMEDOUT;
            return -1;
        }
    }
}

// After a send that could not go on at once: from now on sends block, a
// tick at a time, and the response's clock runs. -1 when its pace has run
// out.
static int wait_to_send(Link &link) {
    if (link.gives_way && link.worker->stopping()) return -1;
    start_pace(link.sending);
    if (!link.sends_wait) {
        set_socket_timeout(link.fd, SO_SNDTIMEO, link.tick_ms / 1000.0);
        link.sends_wait = true;
        return 0;
    }
    return pace_spent(link, link.sending) ? -1 : 0;
}

// Sends all of the pieces (consuming the array), paced by link.sending.
// 0, or -1 when the client is gone or too slow.
static int send_all(Link &link, iovec *pieces, int count, bool more) {
    while (count > 0) {
        // Once sends block, the pace is looked at before each one: a reader
        // that takes a few bytes at a time never lets a send time out.
        if (link.sends_wait && wait_to_send(link) < 0) return -1;
        ssize_t n = sys::send_pieces(link.fd, pieces, count, link.sends_wait, more);
        if (n < 0) {
            if (errno == EINTR) continue;
            if ((errno != EAGAIN && errno != EWOULDBLOCK) || wait_to_send(link) < 0) return -1;
            continue;
        }
        paced(link.sending, size_t(n));
        for (; count > 0 && size_t(n) >= pieces->iov_len; pieces++, count--) n -= ssize_t(pieces->iov_len);
        if (count > 0) {
            pieces->iov_base = static_cast<char *>(pieces->iov_base) + n;
            pieces->iov_len -= size_t(n);
        }
    }
    return 0;
}

// Sends length bytes of the file from offset, paced by link.sending. 0 / -1.
static int send_file(Link &link, int file_fd, uint64_t offset, uint64_t length) {
    while (length > 0) {
        if (wait_to_send(link) < 0) return -1;  // blocking from here: sendfile() has no "do not wait" flag
        ssize_t n = sys::sendfile_some(link.fd, file_fd, offset, length);
        if (n == 0) return -1;  // the file shrank under us
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (n < 0) continue;
        paced(link.sending, size_t(n));
        offset += uint64_t(n);
        length -= uint64_t(n);
    }
    return 0;
}

static int send_text(Link &link, const char *text, size_t length) {
    begin_pace(link.sending, link.send_timeout, link.min_rate);
    iovec piece = {const_cast<char *>(text), length};
    return send_all(link, &piece, 1, false);
}

// Files up to this size are read into a buffer and leave with their head in
// one send; bigger ones follow it by sendfile().
static const size_t inline_file_max = 16384;

// Builds the response head in in.out: the status line, Date, Server, the
// framing (text/plain when a body has no Content-Type), Connection where it
// differs from the version's default, then the handler's fields.
static void build_head(ServiceState &in, const HttpOptions &options, const HttpResponse &r, Framing framing,
                       bool keep_alive, int minor_version) {
    std::string &out = in.out;
    int status = r.status();
    out.assign("HTTP/1.1 ");
    append_number(out, uint64_t(status));
    out += ' ';
    out += http_reason(status);
    out += "\r\n";
    if (!HttpResponder::replaced(r, field_date)) {
        out += "Date: ";
        out += in.date.at(time(nullptr), http_date_pattern, false);
        out += "\r\n";
    }
    if (!HttpResponder::replaced(r, field_server)) {
        out += "Server: ";
        out += options.server_name;
        out += "\r\n";
    }
    bool buffered = framing == Framing::length;
    if (framing != Framing::none && !HttpResponder::has_field(r, "content-type") &&
        !(buffered && HttpResponder::body(r).empty()))
        out += "Content-Type: text/plain; charset=utf-8\r\n";
    if (buffered) {
        out += "Content-Length: ";
        append_number(out, HttpResponder::body_length(r));
        out += "\r\n";
    } else if (framing == Framing::chunked) {
        out += "Transfer-Encoding: chunked\r\n";
    }
    if (!keep_alive) out += "Connection: close\r\n";
    else if (minor_version == 0) out += "Connection: keep-alive\r\n";
    out += HttpResponder::fields(r);
    out += "\r\n";
}

// Reads length bytes of the file from offset into buf. How many it got:
// fewer when the file shrank under us.
static size_t read_file_at(int fd, char *buf, size_t length, uint64_t offset) {
    size_t got = 0;
    while (got < length) {
        ssize_t n = sys::pread(fd, buf + got, length - got, off_t(offset + got));
        if (n <= 0) break;
        got += size_t(n);
    }
    return got;
}

static bool bodiless_status(int status) { return status < 200 || status == 204 || status == 304; }

// Sends the head in pieces[0] and r's file of length bytes (at most
// inline_file_max) in one send. The file's buffer is on this function's
// stack, not send_response's: the other answers' sends then do not reach
// 16 KiB further down, onto stack pages the worker would otherwise never
// write (each costs it a private page).
__attribute__((noinline)) static bool send_small_file(Link &link, iovec *pieces, HttpResponse &r, size_t length) {
    char small_file[inline_file_max];
    size_t got = read_file_at(HttpResponder::file_fd(r), small_file, length, HttpResponder::file_offset(r));
    pieces[1] = {small_file, got};
    // A file that shrank under us: what there is goes, then the connection closes.
    bool ok = send_all(link, pieces, 2, false) == 0 && got == length;
    r.file(-1, 0, 0);
    return ok;
}

// Sends the response: head and, unless head_only, body, in one send (or
// the head, then the file by sendfile). Adds the bytes it meant to send
// to *sent. false when the client did not take them all: the connection
// cannot carry another response.
static bool send_response(ServiceState &in, const HttpOptions &options, Link &link, HttpResponse &r,
                          bool head_only, bool keep_alive, int minor_version, uint64_t *sent) {
    begin_pace(link.sending, link.send_timeout, link.min_rate);
    int status = r.status();
    bool bodiless = bodiless_status(status);
    build_head(in, options, r, bodiless ? Framing::none : Framing::length, keep_alive, minor_version);
    std::string &out = in.out, &body = HttpResponder::body(r);
    bool file = HttpResponder::file_fd(r) >= 0;
    bool with_body = !head_only && !bodiless;
    uint64_t length = with_body ? HttpResponder::body_length(r) : 0;
    *sent += out.size() + length;
    iovec pieces[2] = {{&out[0], out.size()}, {nullptr, 0}};
    if (with_body && !file)
        pieces[1] = {const_cast<char *>(body.data()), body.size()};
    else if (with_body && length <= inline_file_max)
        return send_small_file(link, pieces, r, size_t(length));
    bool file_follows = with_body && file && length > inline_file_max;
    bool ok = send_all(link, pieces, 2, file_follows) == 0;
    if (ok && file_follows)
        ok = send_file(link, HttpResponder::file_fd(r), HttpResponder::file_offset(r), length) == 0;
    r.file(-1, 0, 0);
    return ok;
}


// Builds the stream's head in in.out, for its status (false, nothing
// built, for a status outside 100-599: run_route answers 500 for it).
PREFORK_COLD static bool start_stream(ResponseStream &st, HttpResponse &r) {
    int status = r.status();
    if (status < 100 || status > 599) return false;
    st.status = status;
    if (st.raw) {  // no head of ours, no framing: the bytes end at the close
        st.in->out.clear();
        st.framing = Framing::close;
        st.keep_alive = false;
        return st.started = true;
    }
    bool http10 = st.minor_version == 0;
    st.framing = bodiless_status(status) ? Framing::none : http10 ? Framing::close : Framing::chunked;
    st.keep_alive = st.keep_alive && !http10 && !HttpResponder::closing(r) && !st.worker->pool_full();
    build_head(*st.in, *st.options, r, st.framing, st.keep_alive, st.minor_version);
    return st.started = true;
}

// Sends the head if it has not gone out, then what body() holds and data
// as one chunk (nothing after a HEAD or for a bodiless status), and with
// last the last chunk. false, and the stream cut, when the client is gone
// or too slow, or the worker should stop while the send waits on it.
PREFORK_COLD static bool stream_send(ResponseStream &st, HttpResponse &r, std::string_view data, bool last) {
    bool starting = !st.started;
    if (starting && !start_stream(st, r)) return false;
    std::string &pending = HttpResponder::body(r);
    bool carries = st.raw || (!st.head_only && st.framing != Framing::none);
    uint64_t length = carries ? pending.size() + data.size() : 0;
    bool chunked = carries && st.framing == Framing::chunked;
    char size_line[24];
    int size_length = length && chunked ? snprintf(size_line, sizeof size_line, "%llx\r\n", (unsigned long long)length) : 0;
    // The chunk's CRLF, then the last chunk: "\r\n" "0\r\n\r\n".
    static const char ends[] = "\r\n0\r\n\r\n";
    size_t skip = size_length ? 0 : 2, end_length = (size_length ? 2 : 0) + (last && chunked ? 5 : 0);
    iovec pieces[5] = {{starting ? &st.in->out[0] : nullptr, starting ? st.in->out.size() : 0},
                       {size_line, size_t(size_length)},
                       {length ? &pending[0] : nullptr, length ? pending.size() : 0},
                       {length ? const_cast<char *>(data.data()) : nullptr, length ? data.size() : 0},
                       {const_cast<char *>(ends + skip), end_length}};
    uint64_t total = pieces[0].iov_len + size_t(size_length) + length + end_length;
    begin_pace(st.link->sending, st.options->send_timeout, st.options->min_rate);
    st.link->gives_way = true;
    bool ok = total == 0 || send_all(*st.link, pieces, 5, false) == 0;
    pending.clear();
    if (!ok) st.cut = true;
    if (!ok) return false;
    st.body_bytes += length;
    st.sent += total;
    st.worker->heartbeat();
    return true;
}

// HttpResponse::write: false once the stream is cut, and once the head
// went out for a response that carries no body (HEAD, 204, 304): nothing
// more will be sent, and the response ends whole. false, nothing sent,
// while a file() is set or for a bad status.
PREFORK_COLD static bool stream_write(ResponseStream &st, HttpResponse &r, std::string_view data) {
    if (st.cut || HttpResponder::file_fd(r) >= 0 || !stream_send(st, r, data, false)) return false;
    return st.raw || (!st.head_only && st.framing != Framing::none);
}

bool HttpResponse::write(std::string_view data) { return stream_ && stream_write(*stream_, *this, data); }

void HttpResponse::abort() {
    close_ = true;
    if (stream_) stream_->cut = true;
}

// Ends a started stream once its handler has returned: what body() still
// holds and the last chunk. Whether the connection may carry another
// request. A file set after the first write cannot be sent: the stream is
// cut (run_route logs the route).
PREFORK_COLD static bool end_stream(ResponseStream &st, HttpResponse &r) {
    if (HttpResponder::file_fd(r) >= 0) st.cut = true;
    if (!st.cut) (void)stream_send(st, r, std::string_view(), true);
    r.file(-1, 0, 0);
    st.link->gives_way = false;
    return !st.cut && st.keep_alive;
}

// Sets a status of the library's own (an error, or the redirect to a
// directory's "/"), whose body render_answer() gives just before it is sent.
static void answer_status(ServiceState &in, HttpResponse &r, int status) {
    r.status(status);
    in.library_answer = true;
}

// Adds from's fields to to through header(): its "Name: value\r\n" lines
// passed header()'s checks once already.
static void copy_fields(const HttpResponse &from, HttpResponse &to) {
    const std::string &fields = HttpResponder::fields(from);
    for (size_t at = 0, colon, end; at < fields.size(); at = end + 2) {
        colon = fields.find(':', at);
        end = fields.find('\r', colon);
        to.header(std::string_view(&fields[at], colon - at), std::string_view(&fields[colon + 2], end - colon - 2));
    }
}

// Writes the body of a response answer_status() set, once, just before it
// is sent. From 400 on, an on_error hook writes into a response of its
// own, whose body and fields are added: its status is not taken, and a
// hook that throws leaves nothing behind (it is logged to worker). Else,
// or then, one line that names the status. ctx is null before routing.
PREFORK_COLD static void render_answer(ServiceState &in, Worker *worker, const HttpContext *ctx, HttpResponse &r) {
    if (!in.library_answer) return;
    in.library_answer = false;
    int status = r.status();
    if (in.render_error && status >= 400) {
        HttpResponse own;
        own.status(status);
        std::string what;
        if (sys::run_guarded([&] { in.render_error(ctx, status, own); }, &what)) {
            copy_fields(own, r);
            r.body(HttpResponder::body(own));
            return;
        }
        if (worker) worker->log(LogLevel::error, "the error hook threw: %s; answering %d with the default body",
                                what.c_str(), status);
    }
    char text[64];
    snprintf(text, sizeof text, "%d %s\n", status, http_reason(status));
    r.body(text);
}

static void log_access(ServiceState &in, const HttpOptions &o, const HttpContext *ctx,
                       std::string_view request_line, int status, uint64_t body_bytes);

// Answers a request that could not be served, logs it, and leaves the
// connection to be closed.
PREFORK_COLD static void send_error(ServiceState &in, const HttpOptions &options, Link &link, int status) {
    HttpResponse &r = in.response;
    HttpResponder::reset(r);
    answer_status(in, r, status);
    render_answer(in, link.worker, nullptr, r);
    uint64_t body = HttpResponder::body(r).size();
    uint64_t sent = 0;
    (void)send_response(in, options, link, r, false, false, 1, &sent);
    log_access(in, options, nullptr, "-", status, body);
    in.linger = status != 408;  // a client too slow for the timeout gets no more time
}

// Whether a segment of the (decoded) path is "." or "..". A client
// removes them before it sends (RFC 3986 section 5.2.4); one that did not
// is refused (400) rather than answered for a path it did not mean, and
// no route or file ever sees them.
static bool has_dot_segment(std::string_view path) {
    for (size_t i = 0; i < path.size(); i++) {
        if (path[i] != '/' || i + 1 == path.size() || path[i + 1] != '.') continue;
        size_t end = i + 2 < path.size() && path[i + 2] == '.' ? i + 3 : i + 2;
        if (end == path.size() || path[end] == '/') return true;
    }
    return false;
}

// Splits the target into path and query; the path of an absolute-form
// target is what follows its authority.
static void split_target(std::string_view target, std::string_view *path, std::string_view *query) {
    if (target.size() > 7 && (target.compare(0, 7, "http://") == 0 || target.compare(0, 8, "https://") == 0)) {
        size_t slash = target.find('/', target.find("//") + 2);
        target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    size_t question = target.find('?');
    *path = target.substr(0, question);
    *query = question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
}

// Runs the route's handler on the request it matched (in.matches). A
// handler that throws, sets a status outside 100-599 or gives a file that
// is not a regular one is answered 500.
static void run_route(ServiceState &in, Route &route, HttpContext &ctx, HttpResponse &r) {
    // One capture per group, an empty one for a group that took no part.
    ctx.captures.clear();
    for (size_t g = 1; g <= route.regex.re_nsub; g++) {
        const regmatch_t &m = in.matches[g];
        ctx.captures.push_back(m.rm_so < 0 ? std::string_view()
                                           : std::string_view(in.path).substr(size_t(m.rm_so),
                                                                              size_t(m.rm_eo - m.rm_so)));
    }
    std::string what;
    bool returned = sys::run_guarded([&] { route.handler(ctx, r); }, &what);
    ResponseStream *stream = HttpResponder::stream(r);
    bool streamed = stream && stream->started;
    if (!returned) what.insert(0, "threw: ");
    else if (streamed && HttpResponder::file_fd(r) >= 0) what = "set a file after writing";
    else if (streamed) return;
    else if (r.status() < 100 || r.status() > 599) what = "set the bad status: " + std::to_string(long(r.status()));
    else if (!HttpResponder::file_sendable(r)) what = "gave a file that is not a regular file";
    else return;
    ctx.worker->log(LogLevel::error, "route %s %s %s; %s", route.method.c_str(), route.pattern.c_str(),
                    what.c_str(), streamed ? "the stream is cut" : "answering 500");
    if (streamed) {
        stream->cut = true;  // its head went out: the client must see it end short
        return;
    }
    HttpResponder::reset(r);
    answer_status(in, r, 500);
    r.close_connection();
}

static bool serve_static(ServiceState &in, HttpContext &ctx, HttpResponse &r);

// Finds the handler for the request and runs it. When none fits: 405 if
// routes match the path under other methods, else the static files
// (serve_static), else 404. So the files are a fallback, whatever the order
// in which routes and directories were added. "OPTIONS *" (the only
// method fill_context lets through with the target "*") asks about the
// server (RFC 9110 section 9.3.7): 204, with every method a route names in
// Allow.
static void route_request(ServiceState &in, HttpContext &ctx, HttpResponse &r) {
    bool head = ctx.method == "HEAD", asterisk = in.path == "*";
    std::string allow;
    for (auto &each : in.routes) {
        Route &route = *each;
        if (!asterisk && !route_matches(route, in.path, in.matches)) continue;
        bool fits = route.method == "*" || route.method == ctx.method || (head && route.method == "GET");
        if (!asterisk && fits) return run_route(in, route, ctx, r);
        auto listed = [&](std::string_view method) {
            bool found = false;
            for_each_token(allow, [&](std::string_view m) { found |= m == method; });
            return found;
        };
        if (route.method != "*" && !listed(route.method)) {
            if (!allow.empty()) allow += ", ";
            allow += route.method;
            if (route.method == "GET" && !listed("HEAD")) allow += ", HEAD";
        }
    }
    if (asterisk) r.status(204);
    else if (!allow.empty()) answer_status(in, r, 405);
    else if (!serve_static(in, ctx, r)) answer_status(in, r, 404);
    if (!allow.empty()) r.header("Allow", allow);
}

// Whether the path is prefix ("/admin/") or under it, or is prefix without
// its final "/" ("/admin").
static bool under_prefix(std::string_view path, std::string_view prefix) {
    return path.substr(0, prefix.size()) == prefix ||
           (prefix.size() > 1 && prefix.back() == '/' && path == prefix.substr(0, prefix.size() - 1));
}

// The access rules (allow_from, deny_from) of the longest prefix that has
// any and holds the path decide: the first, in the order given, whose
// range holds the client; when none does, a prefix with an allow rule
// refuses and one with deny rules only lets in. A client over a UNIX
// socket has no address, and no rule applies to it.
static bool access_allowed(const ServiceState &in, const HttpContext &ctx) {
    size_t longest = 0;
    for (const auto &rule : in.access)
        if (rule.prefix.size() > longest && under_prefix(ctx.path, rule.prefix)) longest = rule.prefix.size();
    const sockaddr *peer = reinterpret_cast<const sockaddr *>(&ctx.worker->peer());
    if (!longest || !ctx.worker->peer_length() || peer->sa_family == AF_UNIX) return true;
    bool allow_rules = false;
    for (const auto &rule : in.access) {
        if (rule.prefix.size() != longest || !under_prefix(ctx.path, rule.prefix)) continue;
        if (rule.range.contains(peer, ctx.worker->peer_length())) return rule.allow;
        allow_rules |= rule.allow;
    }
    return !allow_rules;
}

static bool authorized(ServiceState &in, const HttpContext &ctx, HttpResponse &r);

// Answers the request in r, its body and all, ready to send: 403 for a
// client the access rules keep out, 401 for one a password must let in,
// else what the routes or files say.
static void dispatch(ServiceState &in, HttpContext &ctx, HttpResponse &r) {
    bool asterisk = in.path == "*";
    if (!asterisk && !access_allowed(in, ctx)) {
        ctx.worker->log(LogLevel::info, "the access rules refuse %s to %s", in.path.c_str(), ctx.peer().c_str());
        answer_status(in, r, 403);
    } else if (asterisk || authorized(in, ctx, r)) {
        route_request(in, ctx, r);
    }
    render_answer(in, ctx.worker, &ctx, r);
}

/* Static files. The path is checked twice: lexically (no segment may be
   empty or start with "." - which covers ".", ".." and dotfiles - nor hold
   a backslash), then by the kernel, which opens it beneath the docroot
   directory and follows no symlink and no "..". */
// Extension, then type, each NUL-terminated; an empty extension ends it.
// One string, not an array of pointers: nothing for the loader to relocate.
static const char mime_table[] =
    "html\0text/html; charset=utf-8\0" "htm\0text/html; charset=utf-8\0" "css\0text/css; charset=utf-8\0"
    "js\0text/javascript; charset=utf-8\0" "mjs\0text/javascript; charset=utf-8\0" "json\0application/json\0"
    "txt\0text/plain; charset=utf-8\0" "md\0text/markdown; charset=utf-8\0" "csv\0text/csv; charset=utf-8\0"
    "xml\0application/xml\0" "svg\0image/svg+xml\0" "png\0image/png\0" "jpg\0image/jpeg\0" "jpeg\0image/jpeg\0"
    "gif\0image/gif\0" "webp\0image/webp\0" "avif\0image/avif\0" "ico\0image/x-icon\0" "pdf\0application/pdf\0"
    "wasm\0application/wasm\0" "woff\0font/woff\0" "woff2\0font/woff2\0" "mp4\0video/mp4\0" "webm\0video/webm\0"
    "mp3\0audio/mpeg\0" "ogg\0audio/ogg\0" "wav\0audio/wav\0" "zip\0application/zip\0" "gz\0application/gzip\0"
    "tar\0application/x-tar\0";

static const char *mime_type(std::string_view path) {
    size_t dot = path.rfind('.');
    size_t slash = path.rfind('/');
    if (dot != std::string_view::npos && (slash == std::string_view::npos || dot > slash)) {
        std::string_view extension = path.substr(dot + 1);
        for (const char *entry = mime_table; *entry;) {
            const char *type = entry + strlen(entry) + 1;
            if (equals_nocase(extension, entry)) return type;
            entry = type + strlen(type) + 1;
        }
    }
    return "application/octet-stream";
}

static bool path_is_servable(std::string_view path) {
    if (path.empty() || path[0] != '/' || path.find('\\') != std::string_view::npos) return false;
    // No segment may start with '.' (".", "..", dotfiles) or be empty ("//"
    // would make a redirect's Location protocol-relative).
    for (size_t i = 0; i < path.size(); i++)
        if (path[i] == '/' && i + 1 < path.size() && (path[i + 1] == '.' || path[i + 1] == '/')) return false;
    return true;
}

// Parses an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"). -1 if it is not one.
// An HTTP date in any of the three forms a recipient must accept (RFC 9110
// section 5.6.7): IMF-fixdate, the obsolete RFC 850 form (two-digit year:
// 69-99 are 19xx, as POSIX %y has it) and asctime(). -1 when it is none.
PREFORK_COLD static time_t parse_http_date(std::string_view text) {
    static const char *const patterns[] = {
        http_date_pattern,              // Sun, 06 Nov 1994 08:49:37 GMT
        "%A, %d-%b-%y %H:%M:%S GMT",    // Sunday, 06-Nov-94 08:49:37 GMT
        "%a %b %e %H:%M:%S %Y",         // Sun Nov  6 08:49:37 1994
    };
    if (text.size() < 24 || text.size() > 40) return -1;
    char copy[41];
    memcpy(copy, text.data(), text.size());
    copy[text.size()] = '\0';
    for (const char *pattern : patterns) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(copy, pattern, &tm);
        if (end && !*end) return timegm(&tm);
    }
    return -1;
}

// A single "bytes=" range against size. 1 with *from and *length set, 0 to
// ignore the field (absent, several ranges, another unit), -1 unsatisfiable.
PREFORK_COLD static int parse_range(std::string_view value, uint64_t size, uint64_t *from, uint64_t *length) {
    if (value.size() < 6 || !equals_nocase(value.substr(0, 6), "bytes=") ||
        value.find(',') != std::string_view::npos)
        return 0;
    value.remove_prefix(6);
    size_t dash = value.find('-');
    if (dash == std::string_view::npos) return 0;
    auto number = [](std::string_view digits, uint64_t *out) {
        if (digits.empty() || digits.size() > 18) return false;
        *out = 0;
        for (char ch : digits) {
            if (ch < '0' || ch > '9') return false;
            *out = *out * 10 + uint64_t(ch - '0');
        }
        return true;
    };
    uint64_t first = 0, last = 0;
    bool has_first = number(value.substr(0, dash), &first);
    bool has_last = number(value.substr(dash + 1), &last);
    if (!has_first && !value.substr(0, dash).empty()) return 0;
    if (!has_last && !value.substr(dash + 1).empty()) return 0;
    if (has_first) {
        if (has_last && last < first) return 0;
        if (first >= size) return -1;
        *from = first;
        *length = (has_last ? std::min(last, size - 1) : size - 1) - first + 1;
        return 1;
    }
    if (!has_last) return 0;
    if (last == 0 || size == 0) return -1;  // a suffix of nothing
    *length = std::min(last, size);
    *from = size - *length;
    return 1;
}

/* Directory listings (HttpOptions::autoindex), for a directory without
   index.html: read through the descriptor open_servable opened beneath the
   docroot, they show what a request could be served, regular files and
   directories; no dotfile, and no symlink (fstatat without following it).
   Each row is made as it is read, behind its sort key and a NUL, and
   qsort orders pointers to them: no sort template for a rare page. */
static void append_escaped(std::string &out, std::string_view text, bool json);  // the status page's

// Appends name with every byte but RFC 3986's unreserved ones as %XX: a
// link that means the name, whatever it holds.
PREFORK_COLD static void append_percent_encoded(std::string &out, std::string_view name) {
    for (char ch : name) {
        unsigned char u = (unsigned char)ch;
        bool letter = (u | 0x20) >= 'a' && (u | 0x20) <= 'z';  // ASCII, whatever the locale
        if (letter || (u >= '0' && u <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            out += ch;
        } else {
            out += '%';
            out += "0123456789ABCDEF"[u >> 4];
            out += "0123456789ABCDEF"[u & 15];
        }
    }
}

// The listing's row for the entry name of the directory dir, behind its
// sort key ('0' for a directory, '1' for a file, then the name) and a
// NUL; "" for an entry not listed.
PREFORK_COLD static std::string listing_row(int dir, const char *name, CachedTime &modified) {
    struct stat st;
    if (name[0] == '.' || fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
        return std::string();
    bool directory = S_ISDIR(st.st_mode);
    std::string row = directory ? "0" : "1";
    row += name;
    row += '\0';
    row += "<tr><td><a href=\"";
    append_percent_encoded(row, name);
    row += directory ? "/\">" : "\">";
    append_escaped(row, name, false);
    const char *time = modified.at(st.st_mtime, "%Y-%m-%d %H:%M", false);
    row += directory ? format("/</a></td><td>%s</td><td>-</td></tr>\n", time)
                     : format("</a></td><td>%s</td><td>%lld</td></tr>\n", time, (long long)st.st_size);
    return row;
}

// Answers with the HTML listing of the directory fd (taken) at ctx.path:
// "../" unless at "/", then the directories with a final "/" and the
// files, each part sorted by name (bytewise), with its modification time
// (UTC) and size. 403 when it cannot be read.
PREFORK_COLD static void list_directory(ServiceState &in, int fd, const HttpContext &ctx, HttpResponse &r) {
    DIR *dir = fdopendir(fd);
    if (!dir) {
        sys::close(fd);
        return answer_status(in, r, 403);
    }
    std::vector<std::string> rows;
    CachedTime modified;
    while (const dirent *e = readdir(dir)) {
        std::string row = listing_row(dirfd(dir), e->d_name, modified);
        if (!row.empty()) rows.push_back(std::move(row));
    }
    closedir(dir);
    std::vector<const char *> order(rows.size());
    for (size_t i = 0; i < rows.size(); i++) order[i] = rows[i].c_str();
    qsort(order.data(), order.size(), sizeof(const char *), [](const void *a, const void *b) {
        return strcmp(*(const char *const *)a, *(const char *const *)b);
    });
    std::string page = "<!DOCTYPE html>\n<title>Index of ";
    append_escaped(page, ctx.path, false);
    page += "</title>\n<h1>Index of ";
    append_escaped(page, ctx.path, false);
    page += "</h1>\n<table>\n<tr><th>Name</th><th>Last modified (UTC)</th><th>Size</th></tr>\n";
    if (ctx.path != "/") page += "<tr><td><a href=\"../\">../</a></td><td></td><td>-</td></tr>\n";
    for (const char *key : order) page += key + strlen(key) + 1;  // the row behind its key
    page += "</table>\n";
    r.header("Content-Type", "text/html; charset=utf-8");
    r.body(page);
}

// Opens the file for ctx.path beneath root, following no symlink: for a
// directory its index.html (relative then ends in "index.html"), or a
// redirect when the path lacks its final "/". The fd of a regular file,
// with *st set; or -1 with the answer set in r (301, 403, 404, or with
// autoindex the listing of a directory without index.html). Compiled for
// size, as answer_with_file is, to keep httpd under its limit: about 60
// instructions more per file served.
PREFORK_COLD static int open_servable(ServiceState &in, int root, const HttpContext &ctx, HttpResponse &r,
                                      std::string &relative, struct stat *st, bool autoindex) {
    int fd = sys::open_beneath(root, relative.empty() ? "." : relative.c_str(), O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        answer_status(in, r, errno == ENOENT || errno == ENOTDIR ? 404 : 403);
        return -1;
    }
    if (fstat(fd, st) != 0) st->st_mode = 0;  // neither a directory nor a file: 403
    if (S_ISDIR(st->st_mode)) {
        if (ctx.path.back() != '/') {
            sys::close(fd);
            std::string location(ctx.raw_path);
            location += '/';
            if (!ctx.query.empty()) location += "?" + std::string(ctx.query);
            answer_status(in, r, 301);
            r.header("Location", location);
            return -1;
        }
        int index = sys::openat(fd, "index.html", O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
        if (index < 0 && errno == ENOENT && autoindex) {
            list_directory(in, fd, ctx, r);
            return -1;
        }
        sys::close(fd);
        if (index < 0) {
            answer_status(in, r, 403);  // no index, and no listing
            return -1;
        }
        fd = index;
        if (fstat(fd, st) != 0) st->st_mode = 0;
        relative += "index.html";
    }
    if (!S_ISREG(st->st_mode)) {
        sys::close(fd);
        answer_status(in, r, 403);
        return -1;
    }
    return fd;
}

// The file's entity tag: "size-mtime", both in hex, and "-br" or "-gzip"
// for a precompressed copy, which is another representation of the file
// (gzip -k gives the copy the file's mtime).
static void format_etag(const struct stat &st, const char *coding, char (&etag)[48]) {
    char *end = etag;
    *end++ = '"';
    end = std::to_chars(end, etag + sizeof etag, uint64_t(st.st_size), 16).ptr;
    *end++ = '-';
    end = std::to_chars(end, etag + sizeof etag, uint64_t(st.st_mtime), 16).ptr;
    if (coding && *coding) {
        *end++ = '-';
        end = stpcpy(end, coding);
    }
    *end++ = '"';
    *end = '\0';
}

// A qvalue (RFC 9110 section 12.4.2: "0" to "1", three decimals at most)
// in thousandths; -1 when it is not one.
PREFORK_COLD static int parse_qvalue(std::string_view text) {
    if (text.empty() || text.size() > 5 || text[0] < '0' || text[0] > '1' || (text.size() > 1 && text[1] != '.'))
        return -1;
    int q = (text[0] - '0') * 1000;
    for (size_t i = 2, scale = 100; i < text.size(); i++, scale /= 10) {
        if (text[i] < '0' || text[i] > '9') return -1;
        q += (text[i] - '0') * int(scale);
    }
    return q <= 1000 ? q : -1;
}

// Whether If-None-Match (none_match) names the tag or, without that field,
// If-Modified-Since (since) is not before mtime.
PREFORK_COLD static bool validators_match(std::string_view none_match, std::string_view since, const char *etag,
                                          time_t mtime) {
    bool current = false;
    if (none_match.data()) {
        for_each_token(none_match, [&](std::string_view tag) {
            current |= tag == "*" || tag == etag || (tag.size() > 2 && tag.compare(0, 2, "W/") == 0 && tag.substr(2) == etag);
        });
    } else {
        time_t date = parse_http_date(since);
        current = date >= 0 && mtime <= date;
    }
    return current;
}

// Whether the client's copy is current (304): If-None-Match names the
// tag, or, without that field, If-Modified-Since is not before mtime.
static bool copy_is_current(const HttpContext &ctx, const char *etag, time_t mtime) {
    std::string_view none_match = ctx.header("if-none-match"), since = ctx.header("if-modified-since");
    return (none_match.data() || since.data()) && validators_match(none_match, since, etag, mtime);
}

// The weight, in thousandths, that an Accept-Encoding value gives the
// coding name (RFC 9110 section 12.5.3): its element's q (1000 without
// one, 0 for a malformed one), -1 when no element names it.
PREFORK_COLD static int accept_weight(std::string_view accept, const char *name) {
    int weight = -1;
    for_each_token(accept, [&](std::string_view element) {
        // coding [ OWS ";" OWS "q=" qvalue ]: q is the only parameter.
        size_t end = std::min(element.find_first_of(" \t;"), element.size());
        if (!equals_nocase(element.substr(0, end), name)) return;
        element.remove_prefix(std::min(element.find_first_not_of(" \t;", end), element.size()));
        weight = element.empty() ? 1000 : 0;
        if (element.size() > 2 && (element[0] | 0x20) == 'q' && element[1] == '=')
            weight = std::max(parse_qvalue(element.substr(2)), 0);
    });
    return weight;
}

// Which copy of a file the Accept-Encoding value accept prefers: 0 for
// NAME.br, 1 for NAME.gz, -1 for the file itself; only copies that exist
// (br, gz) count. A coding not named takes the weight of "*" ("x-gzip" is
// gzip); without a "*", identity (the file itself) weighs the least a
// taken coding can (RFC 9110 12.5.3 says it is acceptable, not how much:
// a client that names codings wants them). The greatest weight wins, at
// equal weights br, then gzip, then the file, which goes also to a client
// that refuses it.
PREFORK_COLD static int choose_coding(std::string_view accept, const bool (&exists)[2]) {
    static const char codings[3][9] = {"br", "gzip", "identity"};
    int any = accept_weight(accept, "*"), weights[3];
    for (int i = 0; i < 3; i++) {
        int own = accept_weight(accept, codings[i]);
        if (own < 0 && i == 1) own = accept_weight(accept, "x-gzip");
        weights[i] = own >= 0 ? own : any >= 0 ? any : i == 2 ? 1 : 0;
    }
    int first = weights[1] > weights[0];
    for (int i : {first, 1 - first})
        if (exists[i] && weights[i] > 0 && weights[i] >= weights[2]) return i;
    return -1;
}

// The file's copies: none (the file itself), NAME.br, NAME.gz.
static const char copy_codings[3][5] = {"", "br", "gzip"};
static const char copy_suffixes[3][4] = {"", ".br", ".gz"};

// Whether the file at relative may have precompressed copies: not when it
// is one ("name.gz" is served as it is).
static bool may_have_copies(const std::string &relative) {
    size_t length = relative.size();
    return !(length > 3 && (relative.compare(length - 3, 3, ".gz") == 0 || relative.compare(length - 3, 3, ".br") == 0));
}

// Opens NAME + suffix beside the file at relative, as the file was opened
// (beneath root, no symlink): its fd, with *st set, when it is a regular
// file; else -1.
PREFORK_COLD static int open_copy(int root, std::string &relative, const char *suffix, struct stat *st) {
    size_t length = relative.size();
    int fd = sys::open_beneath(root, relative.append(suffix).c_str(), O_RDONLY | O_NONBLOCK);
    relative.resize(length);
    if (fd >= 0 && fstat(fd, st) == 0 && S_ISREG(st->st_mode)) return fd;
    if (fd >= 0) sys::close(fd);
    return -1;
}

// The precompressed copy of the file at relative that the request's
// Accept-Encoding prefers to the file itself (choose_coding), opened by
// open_copy. Its fd, with *st and *coding ("br", "gzip") set; -1 for the
// file. Any file that may have copies gets Vary in r, with a copy or
// without: caches must not keep a copy added later from its clients.
PREFORK_COLD static int open_precompressed(int root, const HttpContext &ctx, HttpResponse &r, std::string &relative,
                                           struct stat *st, const char **coding) {
    if (!may_have_copies(relative)) return -1;
    r.header("Vary", "Accept-Encoding");
    std::string_view accept = ctx.header("accept-encoding");
    bool exists[2] = {true, true};
    while (accept.data()) {  // the preferred copy, else the other one the client takes
        int i = choose_coding(accept, exists);
        if (i < 0) break;
        int fd = open_copy(root, relative, copy_suffixes[1 + i], st);
        if (fd >= 0) {
            *coding = copy_codings[1 + i];
            return fd;
        }
        exists[i] = false;
    }
    return -1;
}

// The range a request's Range value asks for (see select_range): false
// with 416 answered when it lies outside the file.
PREFORK_COLD static bool apply_range(ServiceState &in, const HttpContext &ctx, HttpResponse &r, std::string_view range,
                                     uint64_t size, const char *etag, const char *modified, uint64_t *from,
                                     uint64_t *length) {
    // If-Range: the range holds only for the representation the client has.
    std::string_view if_range = ctx.header("if-range");
    if (if_range.data() && if_range != etag && if_range != modified) return true;
    int ranged = parse_range(range, size, from, length);
    if (ranged < 0) {
        answer_status(in, r, 416);
        r.header("Content-Range", "bytes */" + std::to_string(size));
        return false;
    }
    if (ranged > 0) {
        r.status(206);
        r.header("Content-Range", "bytes " + std::to_string(*from) + "-" + std::to_string(*from + *length - 1) +
                                      "/" + std::to_string(size));
    }
    return true;
}

// The part of a file of size bytes the request asks for, in *from and
// *length: all of it, or the one range asked for (206, with
// Content-Range) while If-Range still names this version (etag, modified).
// false when the range lies outside the file: 416 answered.
static bool select_range(ServiceState &in, const HttpContext &ctx, HttpResponse &r, uint64_t size, const char *etag,
                         const char *modified, uint64_t *from, uint64_t *length) {
    *from = 0;
    *length = size;
    std::string_view range = ctx.header("range");
    return !range.data() || apply_range(in, ctx, r, range, size, etag, modified, from, length);
}

static CachedFile *cache_entry(ServiceState &in, size_t at) {
    return reinterpret_cast<CachedFile *>(&in.cache_store[at]);
}

// Forgets the entry at offset at: its descriptors are closed, and the
// entries after it move down over it, with the following bytes of an entry
// being built past the last one.
PREFORK_COLD static void drop_cached(ServiceState &in, size_t at, size_t following) {
    CachedFile *f = cache_entry(in, at);
    for (const CachedCopy &c : f->copies)
        if (c.fd >= 0) sys::close(c.fd);
    size_t bytes = f->bytes;
    memmove(f, &in.cache_store[at + bytes], in.cache_used - at - bytes + following);
    in.cache_used -= bytes;
    in.cached--;
}

PREFORK_COLD ServiceState::~ServiceState() {
    while (cached) drop_cached(*this, 0, 0);
}

// The entry for the request path (ctx.path) served from the mount, while it
// is under a second old; null when there is none. Every stale entry passed
// on the way is dropped, so that a file removed from the disk is not held
// open for long by a descriptor kept here.
static CachedFile *cached_file(ServiceState &in, size_t mount, std::string_view path) {
    int64_t now = now_ms();
    for (size_t at = 0; at < in.cache_used;) {
        CachedFile *f = cache_entry(in, at);
        if (now - f->loaded_ms >= 1000) {
            drop_cached(in, at, 0);  // the next entry moves to at: look at it next
        } else if (f->mount == mount && f->path() == path) {
            return f;
        } else {
            at += f->bytes;
        }
    }
    return nullptr;
}

// The offset of the least recently used entry (there is one).
PREFORK_COLD static size_t oldest_cached(ServiceState &in) {
    size_t oldest = 0;
    for (size_t at = 0; at < in.cache_used; at += cache_entry(in, at)->bytes)
        if (cache_entry(in, at)->used < cache_entry(in, oldest)->used) oldest = at;
    return oldest;
}

// Makes room for the entry being built past the last one, building bytes
// so far, to grow by more: the least recently used entries go (and the new
// one moves down with the others). false, none dropped, when it would not
// fit in the store alone.
PREFORK_COLD static bool make_room(ServiceState &in, size_t building, size_t more) {
    if (building + more > in.cache_capacity) return false;
    while (in.cache_used + building + more > in.cache_capacity) drop_cached(in, oldest_cached(in), building);
    return true;
}

// The fields a copy is answered with, in pieces: the first six are a 304's
// (the validators). Pieces, not printf: vfprintf's frame alone would take a
// worker's stack a page deeper.
static const size_t copy_field_count = 13, copy_validator_count = 6;
PREFORK_COLD static void copy_fields(const CachedCopy &c, const std::string &relative, int index, bool vary,
                                     std::string_view (&pieces)[copy_field_count]) {
    bool coded = index > 0;
    const std::string_view all[copy_field_count] = {
        vary ? "Vary: Accept-Encoding\r\n" : "", "ETag: ", c.etag, "\r\nLast-Modified: ", c.modified, "\r\n",
        "Content-Type: ", mime_type(relative), "\r\n", coded ? "Content-Encoding: " : "", copy_codings[index],
        coded ? "\r\n" : "", "Accept-Ranges: bytes\r\n"};
    std::copy(all, all + copy_field_count, pieces);
}

// Adds copy index of the entry being built (building bytes so far) from
// fd (taken), whose fstat is st: its ETag and fields, and its content or
// its descriptor. false when it does not fit or the file shrank under us.
PREFORK_COLD static bool load_copy(ServiceState &in, size_t *building, int fd, const struct stat &st,
                                   const std::string &relative, int index, bool vary) {
    CachedCopy *c = &cache_entry(in, in.cache_used)->copies[index];
    c->size = uint64_t(st.st_size);
    format_etag(st, copy_codings[index], c->etag);
    const char *modified = in.mtime.at(st.st_mtime, http_date_pattern, false);
    size_t length = strnlen(modified, sizeof c->modified - 1);
    memcpy(c->modified, modified, length);
    c->modified[length] = '\0';
    c->mtime = st.st_mtime;
    std::string_view pieces[copy_field_count];
    copy_fields(*c, relative, index, vary, pieces);
    size_t fields = 0;
    for (std::string_view piece : pieces) fields += piece.size();
    size_t content = c->size > cache_file_max ? 0 : size_t(c->size);
    if (!make_room(in, *building, fields + content)) {
        sys::close(fd);
        return false;
    }
    CachedFile *f = cache_entry(in, in.cache_used);  // moved down if entries went
    c = &f->copies[index];
    copy_fields(*c, relative, index, vary, pieces);
    char *start = reinterpret_cast<char *>(f) + *building, *to = start;
    c->fields_at = uint32_t(*building);
    for (size_t i = 0; i < copy_field_count; i++) {
        if (i == copy_validator_count) c->validators = uint32_t(to - start);
        to = std::copy(pieces[i].begin(), pieces[i].end(), to);
    }
    c->fields_size = uint32_t(fields);
    *building += fields;
    c->exists = true;
    if (c->size > cache_file_max) {
        c->fd = fd;
        return true;
    }
    c->content_at = uint32_t(*building);
    *building += content;
    size_t got = read_file_at(fd, to, content, 0);
    sys::close(fd);
    return got == content;
}

// Keeps the file at relative (fd, taken, and its fstat st), and its copies
// when they may be sent, for the request path served from the mount,
// making room: the new entry, or null when it does not fit or a copy would
// not load.
PREFORK_COLD static CachedFile *cache_file(ServiceState &in, const HttpOptions &o, size_t mount, std::string_view path,
                                           const std::string &relative, int fd, const struct stat &st) {
    if (in.cached == cache_entries_max) drop_cached(in, oldest_cached(in), 0);
    size_t building = sizeof(CachedFile) + path.size();
    if (!make_room(in, 0, building)) {
        sys::close(fd);
        return nullptr;
    }
    CachedFile *f = new (cache_entry(in, in.cache_used)) CachedFile;
    f->mount = mount;
    f->path_size = path.size();
    memcpy(f + 1, path.data(), path.size());
    bool vary = o.precompressed && may_have_copies(relative), loaded = true;
    struct stat copy_st = st;
    std::string name = relative;
    for (int i = 0; i < 3 && loaded; i++) {
        if (i > 0) {
            fd = vary ? open_copy(in.roots[mount], name, copy_suffixes[i], &copy_st) : -1;
            if (fd < 0) continue;
        }
        loaded = load_copy(in, &building, fd, copy_st, relative, i, vary);
    }
    f = cache_entry(in, in.cache_used);
    if (!loaded) {
        for (const CachedCopy &c : f->copies)
            if (c.fd >= 0) sys::close(c.fd);
        return nullptr;
    }
    // The store's size is a multiple of the alignment, so the padding fits.
    f->bytes = (building + alignof(CachedFile) - 1) / alignof(CachedFile) * alignof(CachedFile);
    f->loaded_ms = now_ms();
    in.cache_used += f->bytes;
    in.cached++;
    return f;
}

// Answers from the entry: the copy Accept-Encoding prefers, whole, a range
// of it, or 304.
static void answer_cached(ServiceState &in, CachedFile &f, const HttpContext &ctx, HttpResponse &r) {
    f.used = ++in.cache_clock;
    const CachedCopy *c = &f.copies[0];
    if (f.copies[1].exists || f.copies[2].exists) {
        std::string_view accept = ctx.header("accept-encoding");
        bool exists[2] = {f.copies[1].exists, f.copies[2].exists};
        if (accept.data()) c = &f.copies[1 + choose_coding(accept, exists)];
    }
    if (copy_is_current(ctx, c->etag, c->mtime)) {
        r.status(304);
        HttpResponder::set_fields(r, f.fields(*c).substr(0, c->validators));
        return;
    }
    HttpResponder::set_fields(r, f.fields(*c));
    uint64_t from, length;
    if (!select_range(in, ctx, r, c->size, c->etag, c->modified, &from, &length)) return;
    if (c->fd >= 0) HttpResponder::borrowed_file(r, c->fd, from, length);
    else HttpResponder::body(r).assign(f.content(*c).substr(size_t(from), size_t(length)));
}

// Answers from the disk what the cache does not hold: opens the file, and
// keeps it when the cache is on and it fits; else sends it from its
// descriptor, or the precompressed copy the client prefers.
PREFORK_COLD static void serve_uncached(ServiceState &in, const HttpOptions &o, size_t mount, const HttpContext &ctx,
                                        HttpResponse &r) {
    if (!path_is_servable(ctx.path)) return answer_status(in, r, 404);
    // "" for the prefix without its final "/": open_servable redirects it.
    std::string_view below = ctx.path.substr(std::min(ctx.path.size(), in.prefixes[mount].size()));
    std::string relative(below);
    struct stat st;
    int fd = open_servable(in, in.roots[mount], ctx, r, relative, &st, o.autoindex);
    if (fd < 0) return;
    if (in.cache_capacity) {
        if (CachedFile *f = cache_file(in, o, mount, ctx.path, relative, fd, st)) return answer_cached(in, *f, ctx, r);
        fd = open_servable(in, in.roots[mount], ctx, r, relative.assign(below), &st, o.autoindex);
        if (fd < 0) return;
    }
    const char *coding = nullptr;
    if (o.precompressed) {
        int copy = open_precompressed(in.roots[mount], ctx, r, relative, &st, &coding);
        if (copy >= 0) {
            sys::close(fd);
            fd = copy;
        }
    }
    char etag[48];
    format_etag(st, coding, etag);
    const char *modified = in.mtime.at(st.st_mtime, http_date_pattern, false);
    r.header("ETag", etag);
    r.header("Last-Modified", modified);
    if (copy_is_current(ctx, etag, st.st_mtime)) {
        sys::close(fd);
        r.status(304);
        return;
    }
    r.header("Content-Type", mime_type(relative));
    if (coding) r.header("Content-Encoding", coding);
    r.header("Accept-Ranges", "bytes");
    uint64_t from, length;
    if (!select_range(in, ctx, r, uint64_t(st.st_size), etag, modified, &from, &length)) {
        sys::close(fd);
        return;
    }
    HttpResponder::regular_file(r, fd, from, length);  // open_servable checked it
}

// Answers a request from the files beneath in.roots[mount], served under
// in.prefixes[mount] (see serve_directory): from the cache when it holds
// the file. The whole path is checked, and the prefix passed the same
// check: the path beneath the prefix is held to the rules a path at "/"
// is.
static void serve_file(ServiceState &in, size_t mount, HttpContext &ctx, HttpResponse &r) {
    if (ctx.method != "GET" && ctx.method != "HEAD") {
        answer_status(in, r, 405);
        r.header("Allow", "GET, HEAD");
        return;
    }
    const HttpOptions &o = *HttpResponder::stream(r)->options;  // answer() attaches the stream
    CachedFile *f = in.cache_capacity ? cached_file(in, mount, ctx.path) : nullptr;
    if (f) return answer_cached(in, *f, ctx, r);
    serve_uncached(in, o, mount, ctx, r);
}

// Serves the request from the mount with the longest prefix that starts
// the path, or that is the path and a final "/" (redirected there). false
// when no mount holds the path.
static bool serve_static(ServiceState &in, HttpContext &ctx, HttpResponse &r) {
    size_t best = 0, longest = 0;
    for (size_t i = 0; i < in.prefixes.size(); i++) {
        std::string_view prefix = in.prefixes[i];
        if (under_prefix(ctx.path, prefix) && prefix.size() > longest) {
            best = i;
            longest = prefix.size();
        }
    }
    if (longest) serve_file(in, best, ctx, r);
    return longest > 0;
}

/* CGI/1.1 (RFC 3875). A request for PREFIX + name [+ /path/info] runs the
   executable file DIR/name in a child of the worker: a process group of
   its own, a clean environment of meta-variables, the body on stdin,
   stdout's header fields read and the rest streamed to the client as it
   comes (HttpResponse::write), stderr logged line by line. The worker stays
   with the script: it polls the three pipes, reports to the watchdog, and
   kills the whole group when the script outlives cgi_timeout, the client
   goes away or the worker should stop. The script is found as a static
   file is, beneath DIR with no symlink followed and no dotfile. */
struct CgiMount {
    std::string prefix, directory;
    int dir_fd = -1;
    int redirects = 0;  // internal redirects in progress (a loop stops at 5)
};

// A script's process and our ends of its pipes.
struct CgiChild {
    pid_t pid = -1;
    int in = -1, out = -1, err = -1;  // its stdin, stdout, stderr
    std::string name;                 // SCRIPT_NAME, for the log
};

// Finds the script for rest, the path after the prefix: the first segment
// path that is a regular file, below directories. 0 with *script (relative
// to the mount) and *path_info set; else the status to answer: 404 (no
// such file, a dotfile), 403 (a directory, a symlink, not executable).
PREFORK_COLD static int find_script(const CgiMount &m, std::string_view rest, std::string *script, std::string_view *path_info) {
    for (size_t slash = 0;;) {
        slash = rest.find('/', slash);
        std::string part(rest.substr(0, slash));
        if (part.empty() || !path_is_servable("/" + part)) return 404;
        int fd = sys::open_beneath(m.dir_fd, part.c_str(), O_RDONLY | O_NONBLOCK);
        struct stat st;
        if (fd < 0) return errno == ENOENT || errno == ENOTDIR ? 404 : 403;
        bool known = fstat(fd, &st) == 0;
        sys::close(fd);
        if (known && S_ISDIR(st.st_mode) && slash != std::string_view::npos) {
            slash++;
            continue;
        }
        if (!known || !S_ISREG(st.st_mode) || !(st.st_mode & 0111)) return 403;
        *script = part;
        *path_info = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
        return 0;
    }
}

// "HTTP_" and the field's name, uppercase, "-" as "_".
static std::string cgi_field_name(std::string_view field) {
    std::string name = "HTTP_";
    for (char ch : field) name += ch == '-' ? '_' : char(toupper((unsigned char)ch));
    return name;
}

// The request's fields as HTTP_* variables; repeats joined with ", ".
// Content-Type and Content-Length have their own variables; Proxy
// (HTTP_PROXY would set a proxy for the script's own requests: httpoxy)
// and Authorization (a password) are not passed.
PREFORK_COLD static void add_field_variables(std::vector<std::string> &env, const HttpContext &ctx) {
    size_t first = env.size();
    for (size_t i = 0; i < ctx.header_count; i++) {
        std::string_view field = ctx.headers[i].name;
        if (equals_nocase(field, "proxy") || equals_nocase(field, "authorization") ||
            equals_nocase(field, "content-type") || equals_nocase(field, "content-length"))
            continue;
        std::string name = cgi_field_name(field) + "=";
        auto same = std::find_if(env.begin() + long(first), env.end(),
                                 [&](const std::string &v) { return v.compare(0, name.size(), name) == 0; });
        if (same != env.end()) *same += ", " + std::string(ctx.headers[i].value);
        else env.push_back(name + std::string(ctx.headers[i].value));
    }
}

static void add_variable(std::vector<std::string> &env, const char *name, std::string_view value) {
    std::string variable = name;
    variable += '=';
    variable.append(value.data(), value.size());
    env.push_back(std::move(variable));
}

// The meta-variables of RFC 3875 section 4.1 for the script, and a PATH.
PREFORK_COLD static std::vector<std::string> cgi_environment(const CgiMount &m, const HttpOptions &o,
                                                             const HttpContext &ctx, const std::string &script,
                                                             std::string_view path_info, int fd,
                                                             const std::string &document_root,
                                                             const std::string &remote_user) {
    sockaddr_storage local;
    socklen_t length = sizeof local;
    int ports[2] = {0, 0};  // ours, the client's
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&local), &length) == 0)
        (void)describe_address(reinterpret_cast<sockaddr *>(&local), length, &ports[0]);
    (void)describe_address(reinterpret_cast<const sockaddr *>(&ctx.worker->peer()), ctx.worker->peer_length(),
                           &ports[1]);
    char numbers[2][16];
    for (int i = 0; i < 2; i++) snprintf(numbers[i], sizeof numbers[i], "%d", ports[i]);
    std::string_view host = ctx.header("host");
    host = host.substr(0, host.empty() || host[0] != '[' ? host.find(':') : host.find(']') + 1);
    std::string name = m.prefix + script, file = m.directory + "/" + script;
    std::vector<std::string> env;
    const std::pair<const char *, std::string_view> variables[] = {
        {"GATEWAY_INTERFACE", "CGI/1.1"}, {"PATH", "/usr/local/bin:/usr/bin:/bin"},
        {"SERVER_SOFTWARE", o.server_name}, {"SERVER_NAME", host.empty() ? "localhost" : host},
        {"SERVER_PORT", numbers[0]}, {"SERVER_PROTOCOL", ctx.minor_version ? "HTTP/1.1" : "HTTP/1.0"},
        {"REQUEST_METHOD", ctx.method}, {"REQUEST_URI", ctx.target}, {"SCRIPT_NAME", name},
        {"SCRIPT_FILENAME", file}, {"QUERY_STRING", ctx.query}, {"REMOTE_PORT", numbers[1]},
        {"DOCUMENT_ROOT", document_root}, {"REDIRECT_STATUS", "200"}};
    for (const auto &v : variables) add_variable(env, v.first, v.second);
    add_variable(env, "REMOTE_ADDR", ctx.peer());
    if (!remote_user.empty()) {
        add_variable(env, "AUTH_TYPE", "Basic");
        add_variable(env, "REMOTE_USER", remote_user);
    }
    if (!path_info.empty()) {
        add_variable(env, "PATH_INFO", path_info);
        add_variable(env, "PATH_TRANSLATED", document_root + std::string(path_info));
    }
    if (ctx.header("content-type").data()) add_variable(env, "CONTENT_TYPE", ctx.header("content-type"));
    if (ctx.header("content-length").data() || ctx.header("transfer-encoding").data())
        add_variable(env, "CONTENT_LENGTH", std::to_string(ctx.body.size()));
    add_field_variables(env, ctx);
    return env;
}

// In the forked child: the pipes become 0, 1 and 2 (blocking), every
// other descriptor is closed, the signals are as a new program expects,
// and the script runs in its own directory. Never returns.
[[noreturn]] PREFORK_COLD static void exec_script(const int (&fds)[3], const std::string &path, char *const *env) {
    for (int i = 0; i < 3; i++) {
        if (sys::dup2(fds[i], i) < 0) _exit(127);
        fcntl(i, F_SETFL, fcntl(i, F_GETFL) & ~O_NONBLOCK);  // not set_flags(): that adds close-on-exec
    }
    sys::close_from(3);
    reset_signals_for_exec();
    sys::set_parent_death_signal(SIGKILL);  // a worker killed outright takes its script along (Linux)
    std::string dir = path.substr(0, path.rfind('/'));
    char *const argv[] = {const_cast<char *>(path.c_str()), nullptr};
    if (chdir(dir.c_str()) == 0) execve(path.c_str(), argv, env);
    dprintf(2, "cannot run %s: %s\n", path.c_str(), strerror(errno));
    _exit(127);
}

// Starts the script in a process group of its own, with the three pipes.
// 0, or -1 with errno.
PREFORK_COLD static int spawn_script(CgiChild &c, const std::string &path, const std::vector<std::string> &env) {
    std::vector<char *> envp;
    for (const std::string &v : env) envp.push_back(const_cast<char *>(v.c_str()));
    envp.push_back(nullptr);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if (sys::pipe(in) < 0 || sys::pipe(out) < 0 || sys::pipe(err) < 0) c.pid = -1;
    else c.pid = fork();
    if (c.pid == 0) {
        setpgid(0, 0);
        exec_script({in[0], out[1], err[1]}, path, envp.data());
    }
    int saved = errno;
    if (c.pid > 0) setpgid(c.pid, c.pid);  // as the child does: whichever runs first
    for (int fd : {in[0], out[1], err[1]}) sys::close(fd);
    c.in = in[1], c.out = out[0], c.err = err[0];
    errno = saved;
    return c.pid > 0 ? 0 : -1;
}

// Ends the script's whole group, and reaps the script.
static void kill_script(CgiChild &c) {
    kill(-c.pid, SIGKILL);
    int status;
    sys::waitpid(c.pid, &status, 0);
    c.pid = -1;
}

// Logs the whole lines in err (the script's stderr so far) and keeps the
// rest; with all, the rest too. A line is cut at 1000 bytes.
PREFORK_COLD static void log_script_lines(Worker &worker, const CgiChild &c, std::string &err, bool all) {
    size_t at = 0;
    for (;;) {
        size_t end = err.find('\n', at);
        if (end == std::string::npos && !(all && at < err.size()) && err.size() - at < 1000) break;
        size_t stop = end == std::string::npos ? std::min(err.size(), at + 1000) : end;
        std::string_view line = std::string_view(err).substr(at, std::min<size_t>(stop - at, 1000));
        worker.log(LogLevel::error, "cgi %s[%d]: %.*s", c.name.c_str(), int(c.pid), int(line.size()), line.data());
        at = end == std::string::npos ? stop : end + 1;
    }
    err.erase(0, at);
}

static const char client_went_away[] = "the client went away";

// The script's side of a request, while the worker relays it.
struct CgiRelay {
    CgiChild child;
    std::string head;            // stdout until the empty line that ends the head
    std::string err;             // stderr's unfinished line
    size_t fed = 0;              // bytes of the body on its stdin so far
    bool head_done = false;      // (nph- scripts have no head of ours)
    std::string local;           // a local Location, served instead of the output
    int status = 0;              // the answer when nothing went out (502, 503, 504)
    const char *why = nullptr;   // why the script is killed
    int64_t deadline_ms = 0;     // cgi_timeout
};

static std::string_view trim_space(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Applies the script's head (its lines, without the empty one) to r:
// Status, Location (a local path is kept in *local; a URL is a 302
// unless Status says otherwise), Content-Type and the other fields, but
// not the responder's framing. 0, or 502 for a line that is not a field
// or a bad Status.
PREFORK_COLD static int apply_script_head(std::string_view head, HttpResponse &r, std::string *local) {
    bool has_status = false;
    std::string_view location;
    while (!head.empty()) {
        size_t end = head.find('\n');
        std::string_view line = head.substr(0, end);
        head = end == std::string_view::npos ? std::string_view() : head.substr(end + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0) return 502;
        std::string_view name = line.substr(0, colon), value = trim_space(line.substr(colon + 1));
        if (equals_nocase(name, "status")) {
            int code = 0;
            auto parsed = std::from_chars(value.data(), value.data() + std::min<size_t>(value.size(), 3), code);
            if (value.size() < 3 || parsed.ptr != value.data() + 3 || code < 100 || code > 599) return 502;
            r.status(code);
            has_status = true;
        } else if (equals_nocase(name, "location") && !value.empty() && value[0] == '/') {
            location = value;
        } else if (!r.header(name, value) && own_field(name) == 0) {
            return 502;
        } else if (equals_nocase(name, "location") && !has_status) {
            r.status(302);
        }
    }
    if (!location.empty()) *local = std::string(location);
    return 0;
}

// Where the head in text ends: the index after its empty line (with
// *head_length the bytes before that line), or npos while it has not.
static size_t script_head_end(const std::string &text, size_t *head_length) {
    for (size_t at = 0; (at = text.find('\n', at)) != std::string::npos; at++) {
        size_t line_start = at > 0 && text[at - 1] == '\r' ? at - 1 : at;
        if (line_start == 0 || text[line_start - 1] == '\n') {
            *head_length = line_start;
            return at + 1;
        }
    }
    return std::string::npos;
}

// Takes n bytes of the script's stdout: the head first (applied to r once
// whole), then the body to the client. false when the relay must end:
// the client is gone or too slow (the stream is cut), or the head is bad
// (cr.status set).
PREFORK_COLD static bool take_output(CgiRelay &cr, HttpResponse &r, const char *data, size_t n) {
    if (cr.head_done) {
        if (!cr.local.empty() || r.write(std::string_view(data, n)) || !HttpResponder::stream(r)->cut) return true;
        cr.why = client_went_away;
        return false;
    }
    cr.head.append(data, n);
    size_t head_length = 0, end = script_head_end(cr.head, &head_length);
    if (end == std::string::npos) {
        if (cr.head.size() <= http_max_header_block) return true;
        cr.why = "sent a head over 16 KiB";
    } else if (apply_script_head(std::string_view(cr.head).substr(0, head_length), r, &cr.local) != 0) {
        cr.why = "sent a malformed head";
    }
    if (cr.why) {
        cr.status = 502;
        return false;
    }
    cr.head_done = true;
    std::string rest = cr.head.substr(end);
    cr.head.clear();
    return take_output(cr, r, rest.data(), rest.size());  // an empty rest sends the head alone
}

// Gives the script the next part of the body; closes its stdin once all
// is in, or once it stops reading.
PREFORK_COLD static void feed_script(CgiRelay &cr, std::string_view body) {
    ssize_t n = sys::write(cr.child.in, body.data() + cr.fed, body.size() - cr.fed);
    if (n > 0) cr.fed += size_t(n);
    if (cr.fed == body.size() || (n < 0 && errno != EAGAIN)) {
        sys::close(cr.child.in);
        cr.child.in = -1;
    }
}

// Reads what the script wrote to stderr and logs its whole lines. false
// at its end.
PREFORK_COLD static bool take_errors(CgiRelay &cr, Worker &worker) {
    char buf[4096];
    ssize_t n = sys::read(cr.child.err, buf, sizeof buf);
    if (n < 0 && errno == EAGAIN) return true;
    if (n > 0) cr.err.append(buf, size_t(n));
    log_script_lines(worker, cr.child, cr.err, n <= 0);
    if (n > 0) return true;
    sys::close(cr.child.err);
    cr.child.err = -1;
    return false;
}

// Whether the worker's stop will kill it within half a second: a script
// runs on through a graceful stop, until just before that.
static bool stop_is_near(const Worker &worker) {
    int64_t deadline = 0;
    return worker.stop_reason(&deadline) != StopReason::none && deadline && now_ms() >= deadline - 500;
}

// Relays between the script and the client until the script's stdout
// ends, or until the script must be killed (cr.why): cgi_timeout, the
// client gone, the worker stopping, a bad head. Reports to the watchdog.
PREFORK_COLD static void pump_script(CgiRelay &cr, HttpContext &ctx, HttpResponse &r, int client_fd) {
    Worker &worker = *ctx.worker;
    char buf[16384];
    while (!cr.why && cr.child.out >= 0) {
        pollfd p[3] = {{cr.child.out, POLLIN, 0}, {cr.child.err, POLLIN, 0}, {cr.child.in, POLLOUT, 0}};
        int64_t left = cr.deadline_ms - now_ms();
        int n = left > 0 ? sys::poll(p, 3, int(std::min<int64_t>(left, 250))) : 0;
        worker.heartbeat();
        if (left <= 0) cr.why = "ran past cgi_timeout", cr.status = 504;
        else if (stop_is_near(worker)) cr.why = "would outlive the worker's stop", cr.status = 503;
        else if (n == 0 && client_gone(client_fd)) cr.why = client_went_away, cr.status = 400;
        if (cr.why) break;
        if (p[2].revents) feed_script(cr, ctx.body);
        if (p[1].revents) take_errors(cr, worker);
        if (!p[0].revents) continue;
        ssize_t got = sys::read(cr.child.out, buf, sizeof buf);
        if (got < 0 && errno == EAGAIN) continue;
        if (got > 0 && take_output(cr, r, buf, size_t(got))) continue;
        sys::close(cr.child.out);
        cr.child.out = -1;
    }
}

// After stdout ended: the rest of stderr, then the script's exit, both
// within cgi_timeout; a script that is still there then is killed. Logs a
// script that died of a signal or ended before its head.
PREFORK_COLD static void finish_script(CgiRelay &cr, Worker &worker) {
    int status = 0;
    pid_t reaped = 0;
    while (!cr.why && (cr.child.err >= 0 || reaped == 0)) {
        int64_t left = cr.deadline_ms - now_ms();
        if (left <= 0) cr.why = "ran past cgi_timeout";
        pollfd p = {cr.child.err, POLLIN, 0};
        if (cr.child.err >= 0 && left > 0 && sys::poll(&p, 1, int(std::min<int64_t>(left, 250))) > 0)
            take_errors(cr, worker);
        if (cr.child.err < 0 && reaped == 0) {
            reaped = sys::waitpid(cr.child.pid, &status, WNOHANG);
            if (reaped == 0) sys::poll(nullptr, 0, 5);
        }
        worker.heartbeat();
    }
    if (cr.why) {
        log_script_lines(worker, cr.child, cr.err, true);
        worker.log(cr.why == client_went_away ? LogLevel::info : LogLevel::error, "cgi %s[%d] %s: killed",
                   cr.child.name.c_str(), int(cr.child.pid), cr.why);
        kill_script(cr.child);
    } else if (!cr.head_done) {
        worker.log(LogLevel::error, "cgi %s[%d] ended without a head (%s %d)", cr.child.name.c_str(),
                   int(cr.child.pid), WIFSIGNALED(status) ? "signal" : "exit status",
                   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        cr.status = 502;
    }
    for (int fd : {cr.child.in, cr.child.out, cr.child.err}) sys::close(fd);
}

// Serves a script's local Location (RFC 3875 section 6.2.2) as a GET of
// that path through the routes again, at most 5 deep; 502 for a path that
// is not one.
PREFORK_COLD static void redirect_internally(ServiceState &in, CgiMount &m, HttpContext &ctx, HttpResponse &r,
                                const std::string &location) {
    HttpResponder::reset(r);
    std::string_view path, query;
    split_target(location, &path, &query);
    if (m.redirects >= 5 || !percent_decode(path, &in.path) || has_dot_segment(in.path)) {
        ctx.worker->log(LogLevel::error, "cgi under %s: cannot redirect to %s", m.prefix.c_str(), location.c_str());
        return answer_status(in, r, 502);
    }
    ctx.method = "GET";
    ctx.target = location;
    ctx.raw_path = path;
    ctx.path = in.path;
    ctx.query = query;
    ctx.body = std::string_view();
    m.redirects++;
    dispatch(in, ctx, r);
    m.redirects--;
}

// The route serve_cgi() adds: finds the script, runs it, relays it.
PREFORK_COLD static void run_cgi(ServiceState &in, const HttpOptions &o, CgiMount &m, HttpContext &ctx, HttpResponse &r) {
    std::string script;
    std::string_view path_info;
    int status = find_script(m, ctx.path.substr(m.prefix.size()), &script, &path_info);
    if (status) return answer_status(in, r, status);
    ResponseStream &stream = *HttpResponder::stream(r);
    CgiRelay cr;
    cr.child.name = m.prefix + script;
    cr.deadline_ms = now_ms() + int64_t(o.cgi_timeout * 1000);
    std::string path = m.directory + "/" + script;
    if (spawn_script(cr.child, path, cgi_environment(m, o, ctx, script, path_info, stream.link->fd,
                                                   in.document_root.empty() ? m.directory : in.document_root,
                                                   in.remote_user)) < 0) {
        ctx.worker->log(LogLevel::error, "cgi %s: cannot start: %s", cr.child.name.c_str(), strerror(errno));
        return answer_status(in, r, 500);
    }
    bool nph = path.compare(path.rfind('/') + 1, 4, "nph-") == 0;  // its output is the response, whole
    stream.raw = cr.head_done = nph;
    if (ctx.body.empty()) feed_script(cr, ctx.body);
    pump_script(cr, ctx, r, stream.link->fd);
    finish_script(cr, *ctx.worker);
    if (stream.started && cr.why) stream.cut = true;
    else if (!stream.started && cr.status) answer_status(in, r, cr.status);
    else if (!cr.local.empty()) redirect_internally(in, m, ctx, r, cr.local);
}

// A prefix is a path that could be served, ending in "/".
static bool valid_mount_prefix(const std::string &prefix) {
    return !prefix.empty() && prefix.back() == '/' && path_is_servable(prefix);
}

// Whether files or CGI scripts are served at prefix already.
static bool mounted(const ServiceState &in, const std::string &prefix) {
    return std::count(in.prefixes.begin(), in.prefixes.end(), prefix) +
               std::count(in.cgi_prefixes.begin(), in.cgi_prefixes.end(), prefix) >
           0;
}

// "^" and text, with the characters a regex gives a meaning to escaped.
static std::string literal_pattern(const std::string &text) {
    std::string pattern = "^";
    for (char ch : text) {
        if (strchr(regex_specials, ch)) pattern += '\\';
        pattern += ch;
    }
    return pattern;
}

PREFORK_COLD int HttpService::serve_cgi(const std::string &prefix, const std::string &directory) {
    if (mounted(*in_, prefix)) {
        error_ = format("cannot run CGI scripts at %s: that prefix is served already", prefix.c_str());
        return -1;
    }
    if (!valid_mount_prefix(prefix)) {
        error_ = format("bad CGI prefix %s: a prefix starts and ends with \"/\" and has no empty segment nor one "
                        "starting with \".\"",
                        prefix.c_str());
        return -1;
    }
    CgiMount m;
    m.prefix = prefix;
    char *real = realpath(directory.c_str(), nullptr);
    m.dir_fd = real ? sys::openat(AT_FDCWD, real, O_RDONLY | O_DIRECTORY) : -1;
    if (m.dir_fd < 0) {
        error_ = format("cannot run CGI scripts from %s: %s", directory.c_str(), strerror(errno));
        free(real);
        return -1;
    }
    m.directory = real;
    free(real);
    in_->cgi_dirs.push_back(m.dir_fd);  // closed with the service
    in_->cgi_prefixes.push_back(prefix);
    ServiceState *in = in_.get();
    const HttpOptions *o = &options_;
    return route("*", literal_pattern(prefix), [in, o, m](HttpContext &ctx, HttpResponse &r) mutable {
        run_cgi(*in, *o, m, ctx, r);
    });
}

/* The status page, after Apache's mod_status: HTML for people, "?auto" in
   mod_status's machine-readable format (so collectd's apache plugin and
   Prometheus' apache_exporter read it unchanged), and "?json". */
PREFORK_COLD static void append_escaped(std::string &out, std::string_view text, bool json) {
    for (char ch : text) {
        unsigned char u = (unsigned char)ch;
        if (json && (ch == '"' || ch == '\\')) {
            out += '\\';
            out += ch;
        } else if (json && u < 0x20) {
            char hex[8];
            snprintf(hex, sizeof hex, "\\u%04x", u);
            out += hex;
        } else if (!json && ch == '<') {
            out += "&lt;";
        } else if (!json && ch == '>') {
            out += "&gt;";
        } else if (!json && ch == '&') {
            out += "&amp;";
        } else if (!json && ch == '"') {
            out += "&quot;";
        } else {
            out += ch;
        }
    }
}

// "%g" without the leading zero Apache drops: ".00259347".
PREFORK_COLD static const char *apache_number(double value, char (&text)[40]) {
    snprintf(text, sizeof text, "%g", value);
    return text[0] == '0' && text[1] == '.' ? text + 1 : text;
}

// "?auto": mod_status's machine-readable page, key: value lines.
PREFORK_COLD static void append_status_auto(std::string &out, const Snapshot &s, std::string_view host,
                               const std::string &server_name, double uptime, const std::string &letters) {
    char line[512], per_second[40], bytes_per_second[40], bytes_per_request[40];
    if (host.empty()) host = "localhost";
    out.append(host.data(), host.size());
    out += "\nServerVersion: ";
    out += server_name;
    snprintf(line, sizeof line,
             "\nServerMPM: prefork\nParentServerConfigGeneration: %u\nServerUptimeSeconds: %lld\n"
             "Total Accesses: %llu\nTotal kBytes: %llu\nUptime: %lld\nReqPerSec: %s\nBytesPerSec: %s\n"
             "BytesPerReq: %s\nBusyWorkers: %d\nIdleWorkers: %d\nProcesses: %d\nScoreboard: ",
             s.generation, (long long)uptime, (unsigned long long)s.requests, (unsigned long long)(s.bytes / 1024),
             (long long)uptime, apache_number(double(s.requests) / uptime, per_second),
             apache_number(double(s.bytes) / uptime, bytes_per_second),
             apache_number(s.requests ? double(s.bytes) / double(s.requests) : 0, bytes_per_request), s.busy,
             s.idle, s.busy + s.idle + s.starting + s.exiting);
    out += line;
    out += letters;
    out += '\n';
}

// The JSON object's or the HTML page's totals, up to where the workers
// are listed.
PREFORK_COLD static void append_status_totals(std::string &out, const Snapshot &s, bool json, const std::string &server_name,
                                 double uptime, const std::string &letters) {
    char line[256];
    if (json) {
        snprintf(line, sizeof line,
                 "{\"uptime_seconds\":%lld,\"generation\":%u,\"total_accesses\":%llu,"
                 "\"total_kbytes\":%llu,\"busy_workers\":%d,\"idle_workers\":%d,\"scoreboard\":\"",
                 (long long)uptime, s.generation, (unsigned long long)s.requests,
                 (unsigned long long)(s.bytes / 1024), s.busy, s.idle);
        out += line;
        out += letters + "\",\"workers\":[";
        return;
    }
    out += "<!DOCTYPE html>\n<html><head><title>Server status</title></head><body>\n<h1>";
    append_escaped(out, server_name, false);
    snprintf(line, sizeof line,
             " status</h1>\n<p>Uptime %lld s, generation %u, %llu requests, %llu kB; %d busy, %d idle "
             "workers.</p>\n<pre>",
             (long long)uptime, s.generation, (unsigned long long)s.requests,
             (unsigned long long)(s.bytes / 1024), s.busy, s.idle);
    out += line;
    out += letters + "</pre>\n<table border=\"1\">\n<tr><th>Slot</th><th>PID</th><th>State</th>"
                     "<th>Generation</th><th>Requests</th><th>Age (s)</th><th>Last request</th></tr>\n";
}

// One JSON object or one table row per slot in use.
PREFORK_COLD static void append_status_workers(std::string &out, const Snapshot &s, bool json) {
    char line[256];
    bool first = true;
    for (size_t i = 0; i < s.slots.size(); i++) {
        const Slot &slot = s.slots[i];
        if (slot.state == SlotState::free) continue;
        double age = double(s.now_ms - slot.started_ms) / 1000;
        if (json) {
            snprintf(line, sizeof line,
                     "%s{\"slot\":%zu,\"pid\":%d,\"state\":\"%c\",\"generation\":%u,\"requests\":%llu,"
                     "\"age_seconds\":%.1f,\"last_request\":\"",
                     first ? "" : ",", i, int(slot.pid), Snapshot::letter(slot), slot.generation,
                     (unsigned long long)slot.requests, age);
            out += line;
            append_escaped(out, slot.request, true);
            out += "\"}";
        } else {
            snprintf(line, sizeof line,
                     "<tr><td>%zu</td><td>%d</td><td>%c</td><td>%u</td><td>%llu</td><td>%.1f</td><td>", i,
                     int(slot.pid), Snapshot::letter(slot), slot.generation,
                     (unsigned long long)slot.requests, age);
            out += line;
            append_escaped(out, slot.request, false);
            out += "</td></tr>\n";
        }
        first = false;
    }
}

// Answers with the scoreboard, in the form ctx.query asks for.
PREFORK_COLD static void status_page(HttpContext &ctx, HttpResponse &r, const std::string &server_name) {
    Snapshot s = ctx.worker->scoreboard().snapshot();
    double uptime = std::max<double>(1, double(s.uptime_ms) / 1000);
    std::string letters;
    for (const Slot &slot : s.slots) letters += Snapshot::letter(slot);
    std::string &out = HttpResponder::body(r);
    if (ctx.query == "auto") {
        r.header("Content-Type", "text/plain; charset=utf-8");
        append_status_auto(out, s, ctx.header("host"), server_name, uptime, letters);
        return;
    }
    bool json = ctx.query == "json";
    r.header("Content-Type", json ? "application/json" : "text/html; charset=utf-8");
    append_status_totals(out, s, json, server_name, uptime, letters);
    append_status_workers(out, s, json);
    out += json ? "]}\n" : "</table>\n</body></html>\n";
}

PREFORK_COLD bool AddressRange::parse(const std::string &text, AddressRange *range) {
    AddressRange r;
    size_t slash = text.find('/');
    std::string address = text.substr(0, slash);
    if (inet_pton(AF_INET, address.c_str(), r.bytes) == 1) r.family = AF_INET;
    else if (inet_pton(AF_INET6, address.c_str(), r.bytes) == 1) r.family = AF_INET6;
    else return false;
    int most = r.family == AF_INET ? 32 : 128;
    r.bits = most;
    if (slash != std::string::npos) {
        std::string digits = text.substr(slash + 1);
        if (digits.empty() || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string::npos)
            return false;
        r.bits = atoi(digits.c_str());
        if (r.bits > most) return false;
    }
    *range = r;
    return true;
}

bool AddressRange::contains(const sockaddr *address, socklen_t length) const {
    const unsigned char *bytes = nullptr;
    if (!family || ip_address(address, length, family == AF_INET, &bytes) != family) return false;
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(bytes, this->bytes, size_t(whole)) != 0) return false;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return rest == 0 || (bytes[whole] & mask) == (this->bytes[whole] & mask);
}

// Whether the client may see the status page: over a UNIX socket always,
// else when its address is in `allow`.
static bool status_allowed(const HttpContext &ctx, const std::vector<AddressRange> &allow) {
    if (!ctx.worker || !ctx.worker->peer_length()) return false;
    const sockaddr *peer = reinterpret_cast<const sockaddr *>(&ctx.worker->peer());
    if (peer->sa_family == AF_UNIX) return true;
    for (const AddressRange &range : allow)
        if (range.contains(peer, ctx.worker->peer_length())) return true;
    return false;
}

PREFORK_COLD int HttpService::serve_status(const std::string &path, const std::vector<AddressRange> &allow) {
    std::vector<AddressRange> who = allow;
    if (who.empty()) {
        AddressRange range;
        AddressRange::parse("127.0.0.0/8", &range);
        who.push_back(range);
        AddressRange::parse("::1", &range);
        who.push_back(range);
    }
    std::string name = options_.server_name;
    ServiceState *in = in_.get();
    return route("GET", literal_pattern(path) + "$", [name, who, in](HttpContext &ctx, HttpResponse &r) {
        if (status_allowed(ctx, who)) status_page(ctx, r, name);
        else answer_status(*in, r, 403);
    });
}

PREFORK_COLD int HttpService::serve_directory(const std::string &prefix, const std::string &docroot) {
    bool taken = mounted(*in_, prefix);
    if (taken || !valid_mount_prefix(prefix)) {
        error_ = format("cannot serve %s at %s: %s", docroot.c_str(), prefix.c_str(),
                        taken ? "that prefix is served already"
                              : "a prefix starts and ends with \"/\" and has no empty segment nor one "
                                "starting with \".\"");
        return -1;
    }
    int root = sys::openat(AT_FDCWD, docroot.c_str(), O_RDONLY | O_DIRECTORY);
    if (root < 0) {
        error_ = format("cannot serve %s: %s", docroot.c_str(), strerror(errno));
        return -1;
    }
    in_->roots.push_back(root);
    in_->prefixes.push_back(std::string(prefix));
    char *real = prefix == "/" ? realpath(docroot.c_str(), nullptr) : nullptr;
    if (real) in_->document_root = real;
    free(real);
    return 0;
}

PREFORK_COLD int HttpService::serve_directory(const std::string &docroot) { return serve_directory("/", docroot); }

PREFORK_COLD static int add_access_rule(ServiceState &in, std::string *error, const std::string &prefix,
                                        const AddressRange &range, bool allow) {
    if (!valid_mount_prefix(prefix)) {
        *error = format("bad access rule prefix %s: a prefix starts and ends with \"/\" and has no empty segment "
                        "nor one starting with \".\"",
                        prefix.c_str());
        return -1;
    }
    in.access.push_back({prefix, range, allow});
    return 0;
}

int HttpService::allow_from(const std::string &prefix, const AddressRange &range) {
    return add_access_rule(*in_, &error_, prefix, range, true);
}

int HttpService::deny_from(const std::string &prefix, const AddressRange &range) {
    return add_access_rule(*in_, &error_, prefix, range, false);
}

void HttpService::on_error(std::function<void(const HttpContext *, int, HttpResponse &)> render) {
    in_->render_error = std::move(render);
}

/* ---------------------------------------------------------------------------
   Password hashes, for Basic auth: the schemes Apache's htpasswd and
   `openssl passwd` write (bcrypt, Apache MD5, MD5-crypt, SHA-256/512-crypt,
   {SHA}). glibc no longer ships crypt(3) in libc, so the primitives are
   here, written from their specifications: MD5 (RFC 1321), SHA-1, SHA-256
   and SHA-512 (FIPS 180-4), Blowfish (Schneier, 1993) with the eksblowfish
   set-up of bcrypt (Provos and Mazieres, 1999), MD5-crypt as FreeBSD and
   Apache define it, and Drepper's "Unix crypt using SHA-256 and SHA-512".
   They only check: the entry's own salt and cost recompute its hash from
   the password, and the two are compared in constant time, so the time a
   refusal takes does not tell how much of a guess was right. */

// MD5's T[i] = floor(2^32 * |sin(i + 1)|) (RFC 1321 3.4).
static const uint32_t md5_sines[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
    0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
    0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

// FIPS 180-4 4.2.2 and 4.2.3: the first 32 or 64 bits of the fractional
// parts of the cube roots of the first 64 or 80 primes; 5.3.3 and 5.3.5:
// those of the square roots of the first 8 primes start the hash.
static const uint32_t sha256_roots[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t sha256_initial[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};
static const uint64_t sha512_roots[80] = {
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
};
static const uint64_t sha512_initial[8] = {
    0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
    0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
};

namespace detail {

enum class HashKind { md5, sha1, sha256, sha512 };

}  // namespace detail

using detail::HashKind;

static uint32_t rotl32(uint32_t x, int n) { return x << n | x >> (32 - n); }

template <class Word> static Word rotr(Word x, int n) { return Word(x >> n | x << (8 * sizeof(Word) - n)); }

// A word from its bytes, most significant first (SHA) or last (MD5), and back.
template <class Word> static Word load_word(const unsigned char *p, bool big_endian) {
    Word word = 0;
    for (size_t i = 0; i < sizeof(Word); i++) word = Word(word << 8 | p[big_endian ? i : sizeof(Word) - 1 - i]);
    return word;
}

template <class Word> static void store_word(unsigned char *p, Word word, bool big_endian) {
    for (size_t i = 0; i < sizeof(Word); i++, word = Word(word >> 8))
        p[big_endian ? sizeof(Word) - 1 - i : i] = (unsigned char)word;
}

PREFORK_COLD __attribute__((noinline)) static void md5_compress(uint32_t *h, const unsigned char *block) {
    static const uint8_t shifts[16] = {7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21};
    uint32_t m[16];
    for (int i = 0; i < 16; i++) m[i] = load_word<uint32_t>(block + 4 * i, false);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 64; i++) {
        int round = i / 16, word;
        uint32_t f;
        if (round == 0) f = (b & c) | (~b & d), word = i;
        else if (round == 1) f = (d & b) | (~d & c), word = (5 * i + 1) % 16;
        else if (round == 2) f = b ^ c ^ d, word = (3 * i + 5) % 16;
        else f = c ^ (b | ~d), word = 7 * i % 16;
        uint32_t next = b + rotl32(a + f + md5_sines[i] + m[word], shifts[round * 4 + i % 4]);
        a = d, d = c, c = b, b = next;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d;
}

PREFORK_COLD __attribute__((noinline)) static void sha1_compress(uint32_t *h, const unsigned char *block) {
    uint32_t w[80];
    for (int t = 0; t < 16; t++) w[t] = load_word<uint32_t>(block + 4 * t, true);
    for (int t = 16; t < 80; t++) w[t] = rotl32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) f = (b & c) | (~b & d), k = 0x5a827999;
        else if (t < 40) f = b ^ c ^ d, k = 0x6ed9eba1;
        else if (t < 60) f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
        else f = b ^ c ^ d, k = 0xca62c1d6;
        uint32_t next = rotl32(a, 5) + f + e + k + w[t];
        e = d, d = c, c = rotl32(b, 30), b = a, a = next;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

// SHA-256 and SHA-512 differ only in word size, round count, constants and
// rotations (FIPS 180-4 4.1.2, 4.1.3, 6.2.2, 6.4.2). r: the rotations of
// Sigma0 and Sigma1 (three each), then of sigma0 and sigma1 (two rotations
// and a shift each).
template <class Word, int Rounds>
__attribute__((noinline)) static void sha2_compress(Word *h, const unsigned char *block, const Word *k, const uint8_t *r) {
    Word w[Rounds], v[8];
    for (int t = 0; t < 16; t++) w[t] = load_word<Word>(block + sizeof(Word) * t, true);
    for (int t = 16; t < Rounds; t++) {
        Word s0 = rotr(w[t - 15], r[6]) ^ rotr(w[t - 15], r[7]) ^ Word(w[t - 15] >> r[8]);
        Word s1 = rotr(w[t - 2], r[9]) ^ rotr(w[t - 2], r[10]) ^ Word(w[t - 2] >> r[11]);
        w[t] = Word(s1 + w[t - 7] + s0 + w[t - 16]);
    }
    std::copy(h, h + 8, v);
    for (int t = 0; t < Rounds; t++) {
        Word a = v[0], e = v[4];
        Word t1 = v[7] + (rotr(e, r[3]) ^ rotr(e, r[4]) ^ rotr(e, r[5])) + ((e & v[5]) ^ (~e & v[6])) + k[t] + w[t];
        Word t2 = (rotr(a, r[0]) ^ rotr(a, r[1]) ^ rotr(a, r[2])) + ((a & v[1]) ^ (a & v[2]) ^ (v[1] & v[2]));
        std::copy_backward(v, v + 7, v + 8);  // h = g, ..., e = d, ..., b = a
        v[4] = Word(v[4] + t1);
        v[0] = Word(t1 + t2);
    }
    for (int i = 0; i < 8; i++) h[i] = Word(h[i] + v[i]);
}

// The frame the four hashes share (RFC 1321 3.1-3.2, FIPS 180-4 5.1): the
// message goes to the compression function a block at a time, and the last
// is padded with 0x80, zeros and the length in bits (MD5: little-endian;
// SHA: big-endian, in the block's last 8 or 16 bytes).
class MessageDigest {
public:
    explicit MessageDigest(HashKind kind) : kind_(kind) {
        static const uint32_t md_initial[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
        if (kind == HashKind::sha512) std::copy(sha512_initial, sha512_initial + 8, words64_);
        else if (kind == HashKind::sha256) std::copy(sha256_initial, sha256_initial + 8, words32_);
        else std::copy(md_initial, md_initial + 5, words32_);
    }

    __attribute__((noinline)) MessageDigest &add(std::string_view data) {
        length_ += data.size();
        while (!data.empty()) {
            size_t take = std::min(block_size() - buffered_, data.size());
            memcpy(buffer_ + buffered_, data.data(), take);
            buffered_ += take;
            data.remove_prefix(take);
            if (buffered_ == block_size()) compress(), buffered_ = 0;
        }
        return *this;
    }

    // The raw digest; the object is spent.
    __attribute__((noinline, cold)) std::string digest() {
        bool big_endian = kind_ != HashKind::md5;
        size_t length_bytes = block_size() / 8;
        unsigned char tail[16] = {};
        store_word<uint64_t>(big_endian ? tail + length_bytes - 8 : tail, length_ * 8, big_endian);
        add("\x80");
        while (buffered_ != block_size() - length_bytes) add(std::string_view("", 1));
        add(std::string_view(reinterpret_cast<const char *>(tail), length_bytes));
        unsigned char out[64];
        size_t words = kind_ == HashKind::md5 ? 4 : kind_ == HashKind::sha1 ? 5 : 8;
        for (size_t i = 0; i < words; i++) {
            if (kind_ == HashKind::sha512) store_word(out + 8 * i, words64_[i], true);
            else store_word(out + 4 * i, words32_[i], big_endian);
        }
        return std::string(reinterpret_cast<const char *>(out), words * (kind_ == HashKind::sha512 ? 8 : 4));
    }

private:
    size_t block_size() const { return kind_ == HashKind::sha512 ? 128 : 64; }

    void compress() {
        static const uint8_t sha256_rotations[12] = {2, 13, 22, 6, 11, 25, 7, 18, 3, 17, 19, 10};
        static const uint8_t sha512_rotations[12] = {28, 34, 39, 14, 18, 41, 1, 8, 7, 19, 61, 6};
        switch (kind_) {
        case HashKind::md5: md5_compress(words32_, buffer_); break;
        case HashKind::sha1: sha1_compress(words32_, buffer_); break;
        case HashKind::sha256:
            sha2_compress<uint32_t, 64>(words32_, buffer_, sha256_roots, sha256_rotations);
            break;
        case HashKind::sha512:
            sha2_compress<uint64_t, 80>(words64_, buffer_, sha512_roots, sha512_rotations);
            break;
        }
    }

    HashKind kind_;
    uint32_t words32_[8] = {};
    uint64_t words64_[8] = {};
    unsigned char buffer_[128];
    size_t buffered_ = 0;
    uint64_t length_ = 0;
};

namespace detail {

// The tests' way to the primitives (declared in test/password_test.cc only).
PREFORK_COLD std::string hash_digest(HashKind kind, std::string_view data) { return MessageDigest(kind).add(data).digest(); }

}  // namespace detail

// Blowfish's initial P-array and S-boxes: the fractional part of pi in
// hexadecimal, P[0] = 0x243f6a88 onwards (Schneier, 1993).
static const uint32_t blowfish_pi[18 + 4 * 256] = {
    0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0x082efa98, 0xec4e6c89,
    0x452821e6, 0x38d01377, 0xbe5466cf, 0x34e90c6c, 0xc0ac29b7, 0xc97c50dd, 0x3f84d5b5, 0xb5470917,
    0x9216d5d9, 0x8979fb1b, 0xd1310ba6, 0x98dfb5ac, 0x2ffd72db, 0xd01adfb7, 0xb8e1afed, 0x6a267e96,
    0xba7c9045, 0xf12c7f99, 0x24a19947, 0xb3916cf7, 0x0801f2e2, 0x858efc16, 0x636920d8, 0x71574e69,
    0xa458fea3, 0xf4933d7e, 0x0d95748f, 0x728eb658, 0x718bcd58, 0x82154aee, 0x7b54a41d, 0xc25a59b5,
    0x9c30d539, 0x2af26013, 0xc5d1b023, 0x286085f0, 0xca417918, 0xb8db38ef, 0x8e79dcb0, 0x603a180e,
    0x6c9e0e8b, 0xb01e8a3e, 0xd71577c1, 0xbd314b27, 0x78af2fda, 0x55605c60, 0xe65525f3, 0xaa55ab94,
    0x57489862, 0x63e81440, 0x55ca396a, 0x2aab10b6, 0xb4cc5c34, 0x1141e8ce, 0xa15486af, 0x7c72e993,
    0xb3ee1411, 0x636fbc2a, 0x2ba9c55d, 0x741831f6, 0xce5c3e16, 0x9b87931e, 0xafd6ba33, 0x6c24cf5c,
    0x7a325381, 0x28958677, 0x3b8f4898, 0x6b4bb9af, 0xc4bfe81b, 0x66282193, 0x61d809cc, 0xfb21a991,
    0x487cac60, 0x5dec8032, 0xef845d5d, 0xe98575b1, 0xdc262302, 0xeb651b88, 0x23893e81, 0xd396acc5,
    0x0f6d6ff3, 0x83f44239, 0x2e0b4482, 0xa4842004, 0x69c8f04a, 0x9e1f9b5e, 0x21c66842, 0xf6e96c9a,
    0x670c9c61, 0xabd388f0, 0x6a51a0d2, 0xd8542f68, 0x960fa728, 0xab5133a3, 0x6eef0b6c, 0x137a3be4,
    0xba3bf050, 0x7efb2a98, 0xa1f1651d, 0x39af0176, 0x66ca593e, 0x82430e88, 0x8cee8619, 0x456f9fb4,
    0x7d84a5c3, 0x3b8b5ebe, 0xe06f75d8, 0x85c12073, 0x401a449f, 0x56c16aa6, 0x4ed3aa62, 0x363f7706,
    0x1bfedf72, 0x429b023d, 0x37d0d724, 0xd00a1248, 0xdb0fead3, 0x49f1c09b, 0x075372c9, 0x80991b7b,
    0x25d479d8, 0xf6e8def7, 0xe3fe501a, 0xb6794c3b, 0x976ce0bd, 0x04c006ba, 0xc1a94fb6, 0x409f60c4,
    0x5e5c9ec2, 0x196a2463, 0x68fb6faf, 0x3e6c53b5, 0x1339b2eb, 0x3b52ec6f, 0x6dfc511f, 0x9b30952c,
    0xcc814544, 0xaf5ebd09, 0xbee3d004, 0xde334afd, 0x660f2807, 0x192e4bb3, 0xc0cba857, 0x45c8740f,
    0xd20b5f39, 0xb9d3fbdb, 0x5579c0bd, 0x1a60320a, 0xd6a100c6, 0x402c7279, 0x679f25fe, 0xfb1fa3cc,
    0x8ea5e9f8, 0xdb3222f8, 0x3c7516df, 0xfd616b15, 0x2f501ec8, 0xad0552ab, 0x323db5fa, 0xfd238760,
    0x53317b48, 0x3e00df82, 0x9e5c57bb, 0xca6f8ca0, 0x1a87562e, 0xdf1769db, 0xd542a8f6, 0x287effc3,
    0xac6732c6, 0x8c4f5573, 0x695b27b0, 0xbbca58c8, 0xe1ffa35d, 0xb8f011a0, 0x10fa3d98, 0xfd2183b8,
    0x4afcb56c, 0x2dd1d35b, 0x9a53e479, 0xb6f84565, 0xd28e49bc, 0x4bfb9790, 0xe1ddf2da, 0xa4cb7e33,
    0x62fb1341, 0xcee4c6e8, 0xef20cada, 0x36774c01, 0xd07e9efe, 0x2bf11fb4, 0x95dbda4d, 0xae909198,
    0xeaad8e71, 0x6b93d5a0, 0xd08ed1d0, 0xafc725e0, 0x8e3c5b2f, 0x8e7594b7, 0x8ff6e2fb, 0xf2122b64,
    0x8888b812, 0x900df01c, 0x4fad5ea0, 0x688fc31c, 0xd1cff191, 0xb3a8c1ad, 0x2f2f2218, 0xbe0e1777,
    0xea752dfe, 0x8b021fa1, 0xe5a0cc0f, 0xb56f74e8, 0x18acf3d6, 0xce89e299, 0xb4a84fe0, 0xfd13e0b7,
    0x7cc43b81, 0xd2ada8d9, 0x165fa266, 0x80957705, 0x93cc7314, 0x211a1477, 0xe6ad2065, 0x77b5fa86,
    0xc75442f5, 0xfb9d35cf, 0xebcdaf0c, 0x7b3e89a0, 0xd6411bd3, 0xae1e7e49, 0x00250e2d, 0x2071b35e,
    0x226800bb, 0x57b8e0af, 0x2464369b, 0xf009b91e, 0x5563911d, 0x59dfa6aa, 0x78c14389, 0xd95a537f,
    0x207d5ba2, 0x02e5b9c5, 0x83260376, 0x6295cfa9, 0x11c81968, 0x4e734a41, 0xb3472dca, 0x7b14a94a,
    0x1b510052, 0x9a532915, 0xd60f573f, 0xbc9bc6e4, 0x2b60a476, 0x81e67400, 0x08ba6fb5, 0x571be91f,
    0xf296ec6b, 0x2a0dd915, 0xb6636521, 0xe7b9f9b6, 0xff34052e, 0xc5855664, 0x53b02d5d, 0xa99f8fa1,
    0x08ba4799, 0x6e85076a, 0x4b7a70e9, 0xb5b32944, 0xdb75092e, 0xc4192623, 0xad6ea6b0, 0x49a7df7d,
    0x9cee60b8, 0x8fedb266, 0xecaa8c71, 0x699a17ff, 0x5664526c, 0xc2b19ee1, 0x193602a5, 0x75094c29,
    0xa0591340, 0xe4183a3e, 0x3f54989a, 0x5b429d65, 0x6b8fe4d6, 0x99f73fd6, 0xa1d29c07, 0xefe830f5,
    0x4d2d38e6, 0xf0255dc1, 0x4cdd2086, 0x8470eb26, 0x6382e9c6, 0x021ecc5e, 0x09686b3f, 0x3ebaefc9,
    0x3c971814, 0x6b6a70a1, 0x687f3584, 0x52a0e286, 0xb79c5305, 0xaa500737, 0x3e07841c, 0x7fdeae5c,
    0x8e7d44ec, 0x5716f2b8, 0xb03ada37, 0xf0500c0d, 0xf01c1f04, 0x0200b3ff, 0xae0cf51a, 0x3cb574b2,
    0x25837a58, 0xdc0921bd, 0xd19113f9, 0x7ca92ff6, 0x94324773, 0x22f54701, 0x3ae5e581, 0x37c2dadc,
    0xc8b57634, 0x9af3dda7, 0xa9446146, 0x0fd0030e, 0xecc8c73e, 0xa4751e41, 0xe238cd99, 0x3bea0e2f,
    0x3280bba1, 0x183eb331, 0x4e548b38, 0x4f6db908, 0x6f420d03, 0xf60a04bf, 0x2cb81290, 0x24977c79,
    0x5679b072, 0xbcaf89af, 0xde9a771f, 0xd9930810, 0xb38bae12, 0xdccf3f2e, 0x5512721f, 0x2e6b7124,
    0x501adde6, 0x9f84cd87, 0x7a584718, 0x7408da17, 0xbc9f9abc, 0xe94b7d8c, 0xec7aec3a, 0xdb851dfa,
    0x63094366, 0xc464c3d2, 0xef1c1847, 0x3215d908, 0xdd433b37, 0x24c2ba16, 0x12a14d43, 0x2a65c451,
    0x50940002, 0x133ae4dd, 0x71dff89e, 0x10314e55, 0x81ac77d6, 0x5f11199b, 0x043556f1, 0xd7a3c76b,
    0x3c11183b, 0x5924a509, 0xf28fe6ed, 0x97f1fbfa, 0x9ebabf2c, 0x1e153c6e, 0x86e34570, 0xeae96fb1,
    0x860e5e0a, 0x5a3e2ab3, 0x771fe71c, 0x4e3d06fa, 0x2965dcb9, 0x99e71d0f, 0x803e89d6, 0x5266c825,
    0x2e4cc978, 0x9c10b36a, 0xc6150eba, 0x94e2ea78, 0xa5fc3c53, 0x1e0a2df4, 0xf2f74ea7, 0x361d2b3d,
    0x1939260f, 0x19c27960, 0x5223a708, 0xf71312b6, 0xebadfe6e, 0xeac31f66, 0xe3bc4595, 0xa67bc883,
    0xb17f37d1, 0x018cff28, 0xc332ddef, 0xbe6c5aa5, 0x65582185, 0x68ab9802, 0xeecea50f, 0xdb2f953b,
    0x2aef7dad, 0x5b6e2f84, 0x1521b628, 0x29076170, 0xecdd4775, 0x619f1510, 0x13cca830, 0xeb61bd96,
    0x0334fe1e, 0xaa0363cf, 0xb5735c90, 0x4c70a239, 0xd59e9e0b, 0xcbaade14, 0xeecc86bc, 0x60622ca7,
    0x9cab5cab, 0xb2f3846e, 0x648b1eaf, 0x19bdf0ca, 0xa02369b9, 0x655abb50, 0x40685a32, 0x3c2ab4b3,
    0x319ee9d5, 0xc021b8f7, 0x9b540b19, 0x875fa099, 0x95f7997e, 0x623d7da8, 0xf837889a, 0x97e32d77,
    0x11ed935f, 0x16681281, 0x0e358829, 0xc7e61fd6, 0x96dedfa1, 0x7858ba99, 0x57f584a5, 0x1b227263,
    0x9b83c3ff, 0x1ac24696, 0xcdb30aeb, 0x532e3054, 0x8fd948e4, 0x6dbc3128, 0x58ebf2ef, 0x34c6ffea,
    0xfe28ed61, 0xee7c3c73, 0x5d4a14d9, 0xe864b7e3, 0x42105d14, 0x203e13e0, 0x45eee2b6, 0xa3aaabea,
    0xdb6c4f15, 0xfacb4fd0, 0xc742f442, 0xef6abbb5, 0x654f3b1d, 0x41cd2105, 0xd81e799e, 0x86854dc7,
    0xe44b476a, 0x3d816250, 0xcf62a1f2, 0x5b8d2646, 0xfc8883a0, 0xc1c7b6a3, 0x7f1524c3, 0x69cb7492,
    0x47848a0b, 0x5692b285, 0x095bbf00, 0xad19489d, 0x1462b174, 0x23820e00, 0x58428d2a, 0x0c55f5ea,
    0x1dadf43e, 0x233f7061, 0x3372f092, 0x8d937e41, 0xd65fecf1, 0x6c223bdb, 0x7cde3759, 0xcbee7460,
    0x4085f2a7, 0xce77326e, 0xa6078084, 0x19f8509e, 0xe8efd855, 0x61d99735, 0xa969a7aa, 0xc50c06c2,
    0x5a04abfc, 0x800bcadc, 0x9e447a2e, 0xc3453484, 0xfdd56705, 0x0e1e9ec9, 0xdb73dbd3, 0x105588cd,
    0x675fda79, 0xe3674340, 0xc5c43465, 0x713e38d8, 0x3d28f89e, 0xf16dff20, 0x153e21e7, 0x8fb03d4a,
    0xe6e39f2b, 0xdb83adf7, 0xe93d5a68, 0x948140f7, 0xf64c261c, 0x94692934, 0x411520f7, 0x7602d4f7,
    0xbcf46b2e, 0xd4a20068, 0xd4082471, 0x3320f46a, 0x43b7d4b7, 0x500061af, 0x1e39f62e, 0x97244546,
    0x14214f74, 0xbf8b8840, 0x4d95fc1d, 0x96b591af, 0x70f4ddd3, 0x66a02f45, 0xbfbc09ec, 0x03bd9785,
    0x7fac6dd0, 0x31cb8504, 0x96eb27b3, 0x55fd3941, 0xda2547e6, 0xabca0a9a, 0x28507825, 0x530429f4,
    0x0a2c86da, 0xe9b66dfb, 0x68dc1462, 0xd7486900, 0x680ec0a4, 0x27a18dee, 0x4f3ffea2, 0xe887ad8c,
    0xb58ce006, 0x7af4d6b6, 0xaace1e7c, 0xd3375fec, 0xce78a399, 0x406b2a42, 0x20fe9e35, 0xd9f385b9,
    0xee39d7ab, 0x3b124e8b, 0x1dc9faf7, 0x4b6d1856, 0x26a36631, 0xeae397b2, 0x3a6efa74, 0xdd5b4332,
    0x6841e7f7, 0xca7820fb, 0xfb0af54e, 0xd8feb397, 0x454056ac, 0xba489527, 0x55533a3a, 0x20838d87,
    0xfe6ba9b7, 0xd096954b, 0x55a867bc, 0xa1159a58, 0xcca92963, 0x99e1db33, 0xa62a4a56, 0x3f3125f9,
    0x5ef47e1c, 0x9029317c, 0xfdf8e802, 0x04272f70, 0x80bb155c, 0x05282ce3, 0x95c11548, 0xe4c66d22,
    0x48c1133f, 0xc70f86dc, 0x07f9c9ee, 0x41041f0f, 0x404779a4, 0x5d886e17, 0x325f51eb, 0xd59bc0d1,
    0xf2bcc18f, 0x41113564, 0x257b7834, 0x602a9c60, 0xdff8e8a3, 0x1f636c1b, 0x0e12b4c2, 0x02e1329e,
    0xaf664fd1, 0xcad18115, 0x6b2395e0, 0x333e92e1, 0x3b240b62, 0xeebeb922, 0x85b2a20e, 0xe6ba0d99,
    0xde720c8c, 0x2da2f728, 0xd0127845, 0x95b794fd, 0x647d0862, 0xe7ccf5f0, 0x5449a36f, 0x877d48fa,
    0xc39dfd27, 0xf33e8d1e, 0x0a476341, 0x992eff74, 0x3a6f6eab, 0xf4f8fd37, 0xa812dc60, 0xa1ebddf8,
    0x991be14c, 0xdb6e6b0d, 0xc67b5510, 0x6d672c37, 0x2765d43b, 0xdcd0e804, 0xf1290dc7, 0xcc00ffa3,
    0xb5390f92, 0x690fed0b, 0x667b9ffb, 0xcedb7d9c, 0xa091cf0b, 0xd9155ea3, 0xbb132f88, 0x515bad24,
    0x7b9479bf, 0x763bd6eb, 0x37392eb3, 0xcc115979, 0x8026e297, 0xf42e312d, 0x6842ada7, 0xc66a2b3b,
    0x12754ccc, 0x782ef11c, 0x6a124237, 0xb79251e7, 0x06a1bbe6, 0x4bfb6350, 0x1a6b1018, 0x11caedfa,
    0x3d25bdd8, 0xe2e1c3c9, 0x44421659, 0x0a121386, 0xd90cec6e, 0xd5abea2a, 0x64af674e, 0xda86a85f,
    0xbebfe988, 0x64e4c3fe, 0x9dbc8057, 0xf0f7c086, 0x60787bf8, 0x6003604d, 0xd1fd8346, 0xf6381fb0,
    0x7745ae04, 0xd736fccc, 0x83426b33, 0xf01eab71, 0xb0804187, 0x3c005e5f, 0x77a057be, 0xbde8ae24,
    0x55464299, 0xbf582e61, 0x4e58f48f, 0xf2ddfda2, 0xf474ef38, 0x8789bdc2, 0x5366f9c3, 0xc8b38e74,
    0xb475f255, 0x46fcd9b9, 0x7aeb2661, 0x8b1ddf84, 0x846a0e79, 0x915f95e2, 0x466e598e, 0x20b45770,
    0x8cd55591, 0xc902de4c, 0xb90bace1, 0xbb8205d0, 0x11a86248, 0x7574a99e, 0xb77f19b6, 0xe0a9dc09,
    0x662d09a1, 0xc4324633, 0xe85a1f02, 0x09f0be8c, 0x4a99a025, 0x1d6efe10, 0x1ab93d1d, 0x0ba5a4df,
    0xa186f20f, 0x2868f169, 0xdcb7da83, 0x573906fe, 0xa1e2ce9b, 0x4fcd7f52, 0x50115e01, 0xa70683fa,
    0xa002b5c4, 0x0de6d027, 0x9af88c27, 0x773f8641, 0xc3604c06, 0x61a806b5, 0xf0177a28, 0xc0f586e0,
    0x006058aa, 0x30dc7d62, 0x11e69ed7, 0x2338ea63, 0x53c2dd94, 0xc2c21634, 0xbbcbee56, 0x90bcb6de,
    0xebfc7da1, 0xce591d76, 0x6f05e409, 0x4b7c0188, 0x39720a3d, 0x7c927c24, 0x86e3725f, 0x724d9db9,
    0x1ac15bb4, 0xd39eb8fc, 0xed545578, 0x08fca5b5, 0xd83d7cd3, 0x4dad0fc4, 0x1e50ef5e, 0xb161e6f8,
    0xa28514d9, 0x6c51133c, 0x6fd5c7e7, 0x56e14ec4, 0x362abfce, 0xddc6c837, 0xd79a3234, 0x92638212,
    0x670efa8e, 0x406000e0, 0x3a39ce37, 0xd3faf5cf, 0xabc27737, 0x5ac52d1b, 0x5cb0679e, 0x4fa33742,
    0xd3822740, 0x99bc9bbe, 0xd5118e9d, 0xbf0f7315, 0xd62d1c7e, 0xc700c47b, 0xb78c1b6b, 0x21a19045,
    0xb26eb1be, 0x6a366eb4, 0x5748ab2f, 0xbc946e79, 0xc6a376d2, 0x6549c2c8, 0x530ff8ee, 0x468dde7d,
    0xd5730a1d, 0x4cd04dc6, 0x2939bbdb, 0xa9ba4650, 0xac9526e8, 0xbe5ee304, 0xa1fad5f0, 0x6a2d519a,
    0x63ef8ce2, 0x9a86ee22, 0xc089c2b8, 0x43242ef6, 0xa51e03aa, 0x9cf2d0a4, 0x83c061ba, 0x9be96a4d,
    0x8fe51550, 0xba645bd6, 0x2826a2f9, 0xa73a3ae1, 0x4ba99586, 0xef5562e9, 0xc72fefd3, 0xf752f7da,
    0x3f046f69, 0x77fa0a59, 0x80e4a915, 0x87b08601, 0x9b09e6ad, 0x3b3ee593, 0xe990fd5a, 0x9e34d797,
    0x2cf0b7d9, 0x022b8b51, 0x96d5ac3a, 0x017da67d, 0xd1cf3ed6, 0x7c7d2d28, 0x1f9f25cf, 0xadf2b89b,
    0x5ad6b472, 0x5a88f54c, 0xe029ac71, 0xe019a5e6, 0x47b0acfd, 0xed93fa9b, 0xe8d3c48d, 0x283b57cc,
    0xf8d56629, 0x79132e28, 0x785f0191, 0xed756055, 0xf7960e44, 0xe3d35e8c, 0x15056dd4, 0x88f46dba,
    0x03a16125, 0x0564f0bd, 0xc3eb9e15, 0x3c9057a2, 0x97271aec, 0xa93a072a, 0x1b3f6d9b, 0x1e6321f5,
    0xf59c66fb, 0x26dcf319, 0x7533d928, 0xb155fdf5, 0x03563482, 0x8aba3cbb, 0x28517711, 0xc20ad9f8,
    0xabcc5167, 0xccad925f, 0x4de81751, 0x3830dc8e, 0x379d5862, 0x9320f991, 0xea7a90c2, 0xfb3e7bce,
    0x5121ce64, 0x774fbe32, 0xa8b6e37e, 0xc3293d46, 0x48de5369, 0x6413e680, 0xa2ae0810, 0xdd6db224,
    0x69852dfd, 0x09072166, 0xb39a460a, 0x6445c0dd, 0x586cdecf, 0x1c20c8ae, 0x5bbef7dd, 0x1b588d40,
    0xccd2017f, 0x6bb4e3bb, 0xdda26a7e, 0x3a59ff45, 0x3e350a44, 0xbcb4cdd5, 0x72eacea8, 0xfa6484bb,
    0x8d6612ae, 0xbf3c6f47, 0xd29be463, 0x542f5d9e, 0xaec2771b, 0xf64e6370, 0x740e0d8d, 0xe75b1357,
    0xf8721671, 0xaf537d5d, 0x4040cb08, 0x4eb4e2cc, 0x34d2466a, 0x0115af84, 0xe1b00428, 0x95983a1d,
    0x06b89fb4, 0xce6ea048, 0x6f3f3b82, 0x3520ab82, 0x011a1d4b, 0x277227f8, 0x611560b1, 0xe7933fdc,
    0xbb3a792b, 0x344525bd, 0xa08839e1, 0x51ce794b, 0x2f32c9b7, 0xa01fbac9, 0xe01cc87e, 0xbcc7d1f6,
    0xcf0111c3, 0xa1e8aac7, 0x1a908749, 0xd44fbd9a, 0xd0dadecb, 0xd50ada38, 0x0339c32a, 0xc6913667,
    0x8df9317c, 0xe0b12b4f, 0xf79e59b7, 0x43f5bb3a, 0xf2d519ff, 0x27d9459c, 0xbf97222c, 0x15e6fc2a,
    0x0f91fc71, 0x9b941525, 0xfae59361, 0xceb69ceb, 0xc2a86459, 0x12baa8d1, 0xb6c1075e, 0xe3056a0c,
    0x10d25065, 0xcb03a442, 0xe0ec6e0e, 0x1698db3b, 0x4c98a0be, 0x3278e964, 0x9f1f9532, 0xe0d392df,
    0xd3a0342b, 0x8971f21e, 0x1b0a7441, 0x4ba3348c, 0xc5be7120, 0xc37632d8, 0xdf359f8d, 0x9b992f2e,
    0xe60b6f47, 0x0fe3f11d, 0xe54cda54, 0x1edad891, 0xce6279cf, 0xcd3e7e6f, 0x1618b166, 0xfd2c1d05,
    0x848fd2c5, 0xf6fb2299, 0xf523f357, 0xa6327623, 0x93a83531, 0x56cccd02, 0xacf08162, 0x5a75ebb5,
    0x6e163697, 0x88d273cc, 0xde966292, 0x81b949d0, 0x4c50901b, 0x71c65614, 0xe6c6c7bd, 0x327a140a,
    0x45e1d006, 0xc3f27b9a, 0xc9aa53fd, 0x62a80f00, 0xbb25bfe2, 0x35bdd2f6, 0x71126905, 0xb2040222,
    0xb6cbcf7c, 0xcd769c2b, 0x53113ec0, 0x1640e3d3, 0x38abbd60, 0x2547adf0, 0xba38209c, 0xf746ce76,
    0x77afa1c5, 0x20756060, 0x85cbfe4e, 0x8ae88dd8, 0x7aaaf9b0, 0x4cf9aa7e, 0x1948c25c, 0x02fb8a8c,
    0x01c36ae4, 0xd6ebe1f9, 0x90d4f869, 0xa65cdea0, 0x3f09252d, 0xc208e69f, 0xb74e6132, 0xce77e25b,
    0x578fdfe3, 0x3ac372e6,
};

// Blowfish's state, P-array first then the four S-boxes, in one array as
// the key schedule fills them in that order.
struct Blowfish {
    uint32_t words[18 + 4 * 256];

    Blowfish() { std::copy(blowfish_pi, blowfish_pi + 18 + 4 * 256, words); }

    uint32_t f(uint32_t x) const {
        const uint32_t *s = words + 18;
        return ((s[x >> 24] + s[256 + (x >> 16 & 255)]) ^ s[512 + (x >> 8 & 255)]) + s[768 + (x & 255)];
    }

    // Sixteen rounds, two per turn so that no swap is needed.
    void encrypt(uint32_t *left, uint32_t *right) const {
        uint32_t l = *left, r = *right;
        for (int i = 0; i < 16; i += 2) {
            l ^= words[i];
            r ^= f(l);
            r ^= words[i + 1];
            l ^= f(r);
        }
        *left = r ^ words[17];
        *right = l ^ words[16];
    }

    // ExpandKey (Provos and Mazieres): the key, cycled, XORed into P; then
    // P and the S-boxes replaced, a pair of words at a time, by encrypting
    // the last output XORed with the salt's next 64 bits (cycled). Without
    // a salt this is Blowfish's own key schedule.
    __attribute__((noinline)) void expand(std::string_view key, const unsigned char *salt16) {
        size_t at = 0;
        for (int i = 0; i < 18; i++) words[i] ^= next_word(reinterpret_cast<const unsigned char *>(key.data()), key.size(), &at);
        uint32_t l = 0, r = 0;
        at = 0;
        for (size_t i = 0; i < 18 + 4 * 256; i += 2) {
            if (salt16) l ^= next_word(salt16, 16, &at), r ^= next_word(salt16, 16, &at);
            encrypt(&l, &r);
            words[i] = l;
            words[i + 1] = r;
        }
    }

    static uint32_t next_word(const unsigned char *data, size_t length, size_t *at) {
        uint32_t word = 0;
        for (int i = 0; i < 4; i++, *at = (*at + 1) % length) word = word << 8 | data[*at];
        return word;
    }
};

namespace detail {

// The tests' way to the cipher: one block encrypted under key.
void blowfish_encrypt(std::string_view key, uint32_t *left, uint32_t *right) {
    std::unique_ptr<Blowfish> cipher(new Blowfish);
    cipher->expand(key, nullptr);
    cipher->encrypt(left, right);
}

}  // namespace detail

// Base64 most significant bits first (RFC 4648's order) in the given
// alphabet, '=' padded or not.
PREFORK_COLD static std::string base64(std::string_view bytes, const char *alphabet, bool pad) {
    std::string out;
    for (size_t i = 0; i < bytes.size(); i += 3) {
        size_t group = std::min<size_t>(3, bytes.size() - i);
        uint32_t bits = 0;
        for (size_t j = 0; j < 3; j++) bits = bits << 8 | (j < group ? (unsigned char)bytes[i + j] : 0);
        for (size_t j = 0; j < 4; j++) {
            if (j <= group) out += alphabet[bits >> (18 - 6 * j) & 63];
            else if (pad) out += '=';
        }
    }
    return out;
}

static const char base64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char bcrypt_alphabet[] = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

// Decodes base64 most significant bits first in the given alphabet, no
// padding; spare low bits at the end are ignored. false on a character
// outside the alphabet.
PREFORK_COLD static bool base64_decode(std::string_view text, const char *alphabet, std::string *out) {
    uint32_t bits = 0;
    int pending = 0;
    for (char ch : text) {
        const char *at = ch ? strchr(alphabet, ch) : nullptr;
        if (!at) return false;
        bits = bits << 6 | uint32_t(at - alphabet);
        pending += 6;
        if (pending >= 8) pending -= 8, *out += char(bits >> pending);
    }
    return true;
}

// The crypt family's base64 ("./0-9A-Za-z", least significant bits first):
// the digest's bytes in the order the scheme lists them, three to four
// characters, and a last one or two bytes to two or three.
PREFORK_COLD static std::string crypt_base64(std::string_view digest, const uint8_t *order, size_t n) {
    static const char alphabet[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    std::string out;
    for (size_t i = 0; i < n; i += 3) {
        size_t group = std::min<size_t>(3, n - i);
        uint32_t bits = 0;
        for (size_t j = 0; j < group; j++) bits = bits << 8 | (unsigned char)digest[order[i + j]];
        for (size_t j = 0; j <= group; j++, bits >>= 6) out += alphabet[bits & 63];
    }
    return out;
}

// Equal in a time that depends on the lengths only (which the scheme
// fixes), not on where the first difference is.
static bool same_bytes(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    unsigned char differ = 0;
    for (size_t i = 0; i < a.size(); i++) differ |= (unsigned char)(a[i] ^ b[i]);
    return differ == 0;
}

// A computed hash against the stored one: a stored hash of the wrong length
// is malformed, not a wrong password.
PREFORK_COLD static PasswordVerdict verdict(std::string_view computed, std::string_view stored) {
    if (computed.size() != stored.size()) return PasswordVerdict::unusable;
    return same_bytes(computed, stored) ? PasswordVerdict::match : PasswordVerdict::mismatch;
}

// bcrypt: "$2b$" (or $2a$, $2y$, computed alike), a two-digit cost 04-31,
// "$", 22 characters of salt (16 bytes) and 31 of hash (23 bytes). The key
// is the password with its NUL, cut at 72 bytes.
PREFORK_COLD static PasswordVerdict check_bcrypt(std::string_view password, std::string_view hash) {
    std::string salt;
    if (hash.size() != 60 || hash[6] != '$' || !isdigit((unsigned char)hash[4]) || !isdigit((unsigned char)hash[5]))
        return PasswordVerdict::unusable;
    int cost = (hash[4] - '0') * 10 + (hash[5] - '0');
    if (cost < 4 || cost > 31 || !base64_decode(hash.substr(7, 22), bcrypt_alphabet, &salt) || salt.size() != 16)
        return PasswordVerdict::unusable;
    std::string key(password);
    key += '\0';
    if (key.size() > 72) key.resize(72);
    std::unique_ptr<Blowfish> cipher(new Blowfish);
    cipher->expand(key, reinterpret_cast<const unsigned char *>(salt.data()));
    for (uint64_t i = 0; i < uint64_t(1) << cost; i++) {
        cipher->expand(key, nullptr);
        cipher->expand(salt, nullptr);
    }
    static const char magic[] = "OrpheanBeholderScryDoubt";
    uint32_t text[6];
    for (int i = 0; i < 6; i++) text[i] = load_word<uint32_t>(reinterpret_cast<const unsigned char *>(magic) + 4 * i, true);
    for (int round = 0; round < 64; round++)
        for (int i = 0; i < 6; i += 2) cipher->encrypt(&text[i], &text[i + 1]);
    unsigned char out[24];
    for (int i = 0; i < 6; i++) store_word(out + 4 * i, text[i], true);
    std::string computed = base64(std::string_view(reinterpret_cast<const char *>(out), 23), bcrypt_alphabet, false);
    return verdict(computed, hash.substr(29));
}

// MD5-crypt (Poul-Henning Kamp's, FreeBSD 1994), which Apache's "$apr1$"
// repeats with its own magic: the salt is at most 8 bytes.
PREFORK_COLD static std::string md5_crypt(std::string_view password, std::string_view magic, std::string_view salt) {
    static const uint8_t order[16] = {0, 6, 12, 1, 7, 13, 2, 8, 14, 3, 9, 15, 4, 10, 5, 11};
    std::string alternate = MessageDigest(HashKind::md5).add(password).add(salt).add(password).digest();
    MessageDigest first(HashKind::md5);
    first.add(password).add(magic).add(salt);
    for (size_t left = password.size(); left > 0; left -= std::min<size_t>(left, 16))
        first.add(std::string_view(alternate).substr(0, std::min<size_t>(left, 16)));
    for (size_t bits = password.size(); bits; bits >>= 1)
        first.add(bits & 1 ? std::string_view("", 1) : password.substr(0, 1));
    std::string sum = first.digest();
    for (int i = 0; i < 1000; i++) {
        std::string_view previous = sum;
        MessageDigest round(HashKind::md5);
        round.add(i & 1 ? password : previous);
        if (i % 3) round.add(salt);
        if (i % 7) round.add(password);
        std::string next = round.add(i & 1 ? previous : password).digest();
        sum = next;
    }
    return crypt_base64(sum, order, sizeof order);
}

// magic, the salt up to the next "$" (at most 8 bytes), "$", 22 characters.
PREFORK_COLD static PasswordVerdict check_md5_crypt(std::string_view password, std::string_view hash, std::string_view magic) {
    std::string_view rest = hash.substr(magic.size());
    size_t dollar = rest.find('$');
    if (dollar == std::string_view::npos || dollar > 8) return PasswordVerdict::unusable;
    return verdict(md5_crypt(password, magic, rest.substr(0, dollar)), rest.substr(dollar + 1));
}

// Drepper's SHA-crypt, steps 1-21 of his specification: text of `length`
// bytes made of copies of `digest`, for the P and S sequences.
PREFORK_COLD static std::string repeat_to(std::string_view digest, size_t length) {
    std::string out;
    while (out.size() < length) out += digest.substr(0, length - out.size());
    return out;
}

// The order in which SHA-crypt's base64 takes the digest's bytes.
PREFORK_COLD static std::string sha_crypt_base64(HashKind kind, std::string_view digest) {
    static const uint8_t order256[32] = {0,  10, 20, 21, 1,  11, 12, 22, 2,  3,  13, 23, 24, 4,  14, 15,
                                         25, 5,  6,  16, 26, 27, 7,  17, 18, 28, 8,  9,  19, 29, 31, 30};
    static const uint8_t order512[64] = {
        0,  21, 42, 22, 43, 1,  44, 2,  23, 3,  24, 45, 25, 46, 4,  47, 5,  26, 6,  27, 48, 28,
        49, 7,  50, 8,  29, 9,  30, 51, 31, 52, 10, 53, 11, 32, 12, 33, 54, 34, 55, 13, 56, 14,
        35, 15, 36, 57, 37, 58, 16, 59, 17, 38, 18, 39, 60, 40, 61, 19, 62, 20, 41, 63};
    if (kind == HashKind::sha512) return crypt_base64(digest, order512, sizeof order512);
    return crypt_base64(digest, order256, sizeof order256);
}

PREFORK_COLD static std::string sha_crypt(HashKind kind, std::string_view password, std::string_view salt, unsigned long rounds) {
    size_t size = kind == HashKind::sha512 ? 64 : 32;
    std::string b = MessageDigest(kind).add(password).add(salt).add(password).digest();
    MessageDigest a(kind);
    a.add(password).add(salt);
    for (size_t left = password.size(); left > 0; left -= std::min(left, size))
        a.add(std::string_view(b).substr(0, std::min(left, size)));
    for (size_t bits = password.size(); bits; bits >>= 1) a.add(bits & 1 ? std::string_view(b) : password);
    std::string sum = a.digest();
    MessageDigest password_digest(kind), salt_digest(kind);
    for (size_t i = 0; i < password.size(); i++) password_digest.add(password);
    for (size_t i = 0; i < 16u + (unsigned char)sum[0]; i++) salt_digest.add(salt);
    std::string p = repeat_to(password_digest.digest(), password.size());
    std::string s = repeat_to(salt_digest.digest(), salt.size());
    for (unsigned long i = 0; i < rounds; i++) {
        MessageDigest round(kind);
        round.add(i & 1 ? std::string_view(p) : std::string_view(sum));
        if (i % 3) round.add(s);
        if (i % 7) round.add(p);
        std::string next = round.add(i & 1 ? std::string_view(sum) : std::string_view(p)).digest();
        sum = next;
    }
    return sha_crypt_base64(kind, sum);
}

// "$5$" or "$6$", then "rounds=N$" (default 5000; N is clamped to 1000 ..
// 999999999 as the specification says), the salt up to the next "$" (at
// most 16 bytes), "$", and 43 or 86 characters.
PREFORK_COLD static PasswordVerdict check_sha_crypt(std::string_view password, std::string_view hash) {
    HashKind kind = hash[1] == '5' ? HashKind::sha256 : HashKind::sha512;
    std::string_view rest = hash.substr(3);
    unsigned long long rounds = 5000;
    if (rest.substr(0, 7) == "rounds=") {
        rest.remove_prefix(7);
        size_t digits = 0;
        for (rounds = 0; digits < rest.size() && digits < 10 && isdigit((unsigned char)rest[digits]); digits++)
            rounds = rounds * 10 + unsigned(rest[digits] - '0');
        if (digits == 0 || digits >= rest.size() || rest[digits] != '$') return PasswordVerdict::unusable;
        rounds = std::min<unsigned long long>(std::max<unsigned long long>(rounds, 1000), 999999999);
        rest.remove_prefix(digits + 1);
    }
    size_t dollar = rest.find('$');
    if (dollar == std::string_view::npos || dollar > 16) return PasswordVerdict::unusable;
    return verdict(sha_crypt(kind, password, rest.substr(0, dollar), (unsigned long)rounds), rest.substr(dollar + 1));
}

PREFORK_COLD PasswordVerdict check_password(std::string_view password, std::string_view hash) {
    auto starts = [hash](std::string_view prefix) { return hash.substr(0, prefix.size()) == prefix; };
    if (starts("$2a$") || starts("$2b$") || starts("$2y$")) return check_bcrypt(password, hash);
    if (starts("$apr1$")) return check_md5_crypt(password, hash, "$apr1$");
    if (starts("$1$")) return check_md5_crypt(password, hash, "$1$");
    if (starts("$5$") || starts("$6$")) return check_sha_crypt(password, hash);
    if (starts("{SHA}"))
        return verdict(base64(MessageDigest(HashKind::sha1).add(password).digest(), base64_alphabet, true), hash.substr(5));
    return PasswordVerdict::unusable;  // plaintext, crypt's DES, or a scheme we do not know
}

/* A password file as htpasswd writes it, re-read when it changes. Each
   check() stats the file (a few microseconds; Apache re-reads the whole
   file on every request) and reads it again when its device, inode, size,
   mtime or ctime differ from the copy in memory, so an edit is seen by the
   next request and costs nothing until then. A password verified against
   this version of the file is remembered beside its entry as SHA-256(random
   salt, password): a kept-alive client pays bcrypt once, the process never
   holds the password itself, and the memory is bounded by the file (32
   bytes a user). Only matches are remembered, so a guess always pays.
   The users are a list searched in order: htpasswd files are short, and
   the first of a user's lines then counts, as in Apache's mod_authn_file. */
struct PasswordEntry {
    std::string_view user, hash;  // in PasswordFile::Internals::text
    unsigned line;                // for the log
    bool verified;                // a password matched: its SHA-256(salt, password) follows
    unsigned char fingerprint[32];
};

struct PasswordFile::Internals {
    std::string text;  // the file
    std::vector<PasswordEntry> users;
    bool loaded = false;
    struct stat version = {};
    std::string salt;  // 16 random bytes, or "" (remember nothing)
};

PREFORK_COLD PasswordFile::PasswordFile(const std::string &path) : path_(path), in_(new Internals) {
    unsigned char salt[16];
    if (getentropy(salt, sizeof salt) == 0) in_->salt.assign(reinterpret_cast<const char *>(salt), sizeof salt);
}

PREFORK_COLD PasswordFile::~PasswordFile() = default;
PREFORK_COLD PasswordFile::PasswordFile(PasswordFile &&) noexcept = default;
PREFORK_COLD PasswordFile &PasswordFile::operator=(PasswordFile &&) noexcept = default;

size_t PasswordFile::users() const { return in_->users.size(); }

PREFORK_COLD static bool same_version(const struct stat &a, const struct stat &b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
           a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
           a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// "user:hash" lines; a further ":field" is ignored, a CR before the LF
// dropped; blank lines, "#" comments and lines without ":" or without a
// user name skipped.
PREFORK_COLD static void parse_password_lines(std::string_view text, std::vector<PasswordEntry> *users) {
    unsigned number = 0;
    while (!text.empty()) {
        size_t end = std::min(text.find('\n'), text.size());
        std::string_view line = text.substr(0, end);
        text.remove_prefix(std::min(end + 1, text.size()));
        number++;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        size_t colon = line.find(':');
        if (line.empty() || line[0] == '#' || colon == std::string_view::npos || colon == 0) continue;
        std::string_view hash = line.substr(colon + 1);
        hash = hash.substr(0, hash.find(':'));
        users->push_back({line.substr(0, colon), hash, number, false, {}});
    }
}

// The whole of a file open for reading: 0, or -1 with errno.
PREFORK_COLD static int read_whole(int fd, std::string *text) {
    char buffer[4096];
    for (;;) {
        ssize_t n = sys::read(fd, buffer, sizeof buffer);
        if (n < 0) return -1;
        if (n == 0) return 0;
        text->append(buffer, size_t(n));
    }
}

PREFORK_COLD int PasswordFile::refresh() {
    struct stat now;
    if (stat(path_.c_str(), &now) == 0 && in_->loaded && same_version(now, in_->version)) return 0;
    in_->users.clear();
    in_->text.clear();
    in_->loaded = false;
    int fd = sys::openat(AT_FDCWD, path_.c_str(), O_RDONLY);
    if (fd < 0 || fstat(fd, &now) != 0 || read_whole(fd, &in_->text) != 0) {
        error_ = format("cannot read %s: %s", path_.c_str(), strerror(errno));
        sys::close(fd);
        return -1;
    }
    sys::close(fd);
    parse_password_lines(in_->text, &in_->users);
    in_->version = now;
    in_->loaded = true;
    return 0;
}

static void append_log_field(std::string &out, std::string_view text);

// SHA-256 of the process's salt and the password: what is remembered.
PREFORK_COLD static std::string password_fingerprint(const std::string &salt, std::string_view password) {
    return MessageDigest(HashKind::sha256).add(salt).add(password).digest();
}

PREFORK_COLD PasswordVerdict PasswordFile::check(std::string_view user, std::string_view password) {
    if (refresh() != 0) return PasswordVerdict::unusable;
    auto entry = std::find_if(in_->users.begin(), in_->users.end(), [user](const PasswordEntry &e) { return e.user == user; });
    if (entry == in_->users.end()) {
        std::string name;
        append_log_field(name, user.substr(0, 64));  // the client's bytes, escaped
        error_ = format("no user \"%s\" in %s", name.c_str(), path_.c_str());
        return PasswordVerdict::unknown_user;
    }
    std::string fingerprint = password_fingerprint(in_->salt, password);
    std::string_view remembered(reinterpret_cast<const char *>(entry->fingerprint), sizeof entry->fingerprint);
    if (entry->verified && same_bytes(remembered, fingerprint)) return PasswordVerdict::match;
    PasswordVerdict result = check_password(password, entry->hash);
    std::string name(entry->user);
    if (result == PasswordVerdict::match && !in_->salt.empty()) {
        memcpy(entry->fingerprint, fingerprint.data(), sizeof entry->fingerprint);
        entry->verified = true;
    } else if (result == PasswordVerdict::mismatch) {
        error_ = format("wrong password for \"%s\" (%s)", name.c_str(), path_.c_str());
    } else if (result == PasswordVerdict::unusable) {
        error_ = format("the entry for \"%s\" (%s line %u) is plaintext, malformed or of a scheme prefork cannot check",
                        name.c_str(), path_.c_str(), entry->line);
    }
    return result;
}

/* Basic auth (RFC 7617) for HttpService::require_auth: the longest
   protected prefix of the decoded path decides. A missing credential is
   the browser's first round trip, answered 401 quietly; a wrong one is
   logged with the user name and the peer, never the password. */
PREFORK_COLD int HttpService::require_auth(const std::string &prefix, const std::string &password_file,
                                           const std::string &realm) {
    bool plain = std::none_of(realm.begin(), realm.end(), [](char ch) {
        return (unsigned char)ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\';
    });
    bool taken = std::any_of(in_->auth_zones.begin(), in_->auth_zones.end(),
                             [&](const std::unique_ptr<AuthZone> &zone) { return zone->prefix == prefix; });
    const char *why = prefix.empty() || prefix[0] != '/' ? "the prefix must start with \"/\""
                      : taken ? "it is protected already"
                      : !plain ? "the realm holds a quote, a backslash or a control character"
                               : nullptr;
    if (why) {
        error_ = format("cannot protect %s: %s", prefix.c_str(), why);
        return -1;
    }
    std::unique_ptr<AuthZone> zone(new AuthZone{prefix, "Basic realm=\"" + realm + "\", charset=\"UTF-8\"",
                                                PasswordFile(password_file)});
    if (zone->passwords.refresh() != 0) {
        error_ = format("cannot protect %s: %s", prefix.c_str(), zone->passwords.error().c_str());
        return -1;
    }
    in_->auth_zones.push_back(std::move(zone));
    return 0;
}

// The user and password of "Authorization: Basic BASE64(user:password)";
// false when the field is absent or not that.
PREFORK_COLD static bool basic_credentials(std::string_view field, std::string *decoded, size_t *colon) {
    if (field.size() < 6 || !equals_nocase(field.substr(0, 6), "basic ")) return false;
    std::string_view token = field.substr(6);
    while (!token.empty() && token[0] == ' ') token.remove_prefix(1);
    if (token.empty() || token.size() % 4 != 0) return false;
    for (int i = 0; i < 2 && token.back() == '='; i++) token.remove_suffix(1);
    if (!base64_decode(token, base64_alphabet, decoded)) return false;
    *colon = decoded->find(':');
    return *colon != std::string::npos;
}

// Whether the request may go on to its route: yes when no protected prefix
// covers its path or its credentials match (in.remote_user then names the
// user); else r holds the 401.
static bool authorized(ServiceState &in, const HttpContext &ctx, HttpResponse &r) {
    AuthZone *zone = nullptr;
    for (auto &each : in.auth_zones)
        if (under_prefix(in.path, each->prefix) && (!zone || each->prefix.size() > zone->prefix.size()))
            zone = each.get();
    if (!zone) return true;
    std::string_view field = ctx.header("authorization");
    std::string decoded;
    size_t colon = 0;
    if (basic_credentials(field, &decoded, &colon)) {
        std::string_view user(decoded.data(), colon), password = std::string_view(decoded).substr(colon + 1);
        PasswordVerdict verdict = zone->passwords.check(user, password);
        if (verdict == PasswordVerdict::match) {
            in.remote_user.assign(user.data(), user.size());
            return true;
        }
        ctx.worker->log(verdict == PasswordVerdict::unusable ? LogLevel::error : LogLevel::warning,
                        "auth: %s; refused %s", zone->passwords.error().c_str(), in.peer);
    } else if (!field.empty()) {
        ctx.worker->log(LogLevel::warning, "auth: credentials that are not Basic user:password; refused %s", in.peer);
    }
    answer_status(in, r, 401);
    r.header("WWW-Authenticate", zone->challenge);
    return false;
}

/* The access log, in Apache's Combined Log Format:
   host - user [time] "request" status bytes "referer" "user-agent"
   (user: whom Basic auth let in, else "-").
   Quotes, backslashes and control bytes in what the client sent are
   escaped as Apache does (\", \\, \xhh), so a line cannot be forged. */
static void append_log_field(std::string &out, std::string_view text) {
    if (text.empty()) {
        out += '-';
        return;
    }
    for (char ch : text) {
        unsigned char u = (unsigned char)ch;
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (u < 0x20 || u >= 0x7f) {
            char hex[8];
            snprintf(hex, sizeof hex, "\\x%02x", u);
            out += hex;
        } else {
            out += ch;
        }
    }
}

static void log_access(ServiceState &in, const HttpOptions &o, const HttpContext *ctx,
                       std::string_view request_line, int status, uint64_t body_bytes) {
    if (o.access_log_fd < 0) return;
    std::string &out = in.log;
    out += in.peer;
    out += " - ";
    append_log_field(out, ctx ? std::string_view(in.remote_user) : std::string_view());
    out += " [";
    out += in.log_time.at(time(nullptr), "%d/%b/%Y:%H:%M:%S %z", true);
    out += "] \"";
    append_log_field(out, request_line);
    char numbers[48];
    if (body_bytes) snprintf(numbers, sizeof numbers, "\" %d %llu \"", status, (unsigned long long)body_bytes);
    else snprintf(numbers, sizeof numbers, "\" %d - \"", status);
    out += numbers;
    append_log_field(out, ctx ? ctx->header("referer") : std::string_view());
    out += "\" \"";
    append_log_field(out, ctx ? ctx->header("user-agent") : std::string_view());
    out += "\"\n";
    if (out.size() >= 8192) {
        (void)sys::write_all(o.access_log_fd, out.data(), out.size());
        out.clear();
    }
}

// After an answer that refused a request: no more writes (a FIN follows
// the answer), then what the client still sends is read and dropped until
// it closes its side, for at most 2 s and 1 MiB. Closing with unread input
// would make the kernel reset the connection instead, and a client still
// sending may then lose the answer before it reads it.
PREFORK_COLD static void linger_before_close(int fd) {
    if (shutdown(fd, SHUT_WR) != 0) return;
    char sink[4096];
    int64_t deadline = now_ms() + 2000;
    for (size_t dropped = 0; dropped < (1u << 20);) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return;
        pollfd p = {fd, POLLIN, 0};
        if (sys::poll(&p, 1, int(left)) < 0) return;
        ssize_t n = sys::receive(fd, sink, sizeof sink, false);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return;
        if (n > 0) dropped += size_t(n);
    }
}

// The client's address as the access log shows it, once per connection.
static void note_peer(ServiceState &in, const HttpOptions &o, const Worker &worker) {
    if (o.access_log_fd < 0) return;
    std::string address = peer_text(worker);
    snprintf(in.peer, sizeof in.peer, "%s", address.empty() ? "-" : address.c_str());
}

static void flush_log(ServiceState &in, const HttpOptions &o) {
    if (in.log.empty()) return;
    (void)sys::write_all(o.access_log_fd, in.log.data(), in.log.size());
    in.log.clear();
}

// Waits for the first bytes of a kept-alive connection's next request, at
// most keepalive_timeout, and gives up at once when the worker should stop
// or a new client needs it more (the pool is full). > 0 bytes read, else 0.
static long wait_for_next_request(Link &link, std::string &in, Worker &worker, double keepalive_timeout) {
    worker.set_activity('K');
    int64_t until = now_ms() + int64_t(keepalive_timeout * 1000);
    for (;;) {
        long n = read_some(link, in);
        if (n > 0) {
            worker.set_activity('R');
            return n;
        }
        if (n == 0 || errno != EAGAIN || now_ms() >= until || worker.stopping() || worker.pool_full()) return 0;
    }
}

// The client's socket, paced by the service's options.
static Link client_link(const HttpOptions &o, Worker &worker, int fd) {
    Link link;
    link.fd = fd;
    link.worker = &worker;
    link.send_timeout = o.send_timeout;
    link.min_rate = o.min_rate;
    link.pressure_timeout = o.pressure_timeout;
    return link;
}

// Reads until the input holds a whole request head, and parses it into
// request. A kept-alive connection may idle for keepalive_timeout first
// (ending sooner if the worker should stop or the pool is full); from its
// first byte, a head is paced (request_timeout, or pressure_timeout while
// the pool is full, for all of it). The head's length, or -1 when the
// connection is to close: the client left or went quiet, or an error was
// answered (408, or the parser's status).
static int read_head(ServiceState &in, const HttpOptions &o, Link &link, Worker &worker, bool kept_alive,
                     HttpRequest &request) {
    int status = 0, rc;
    Pace head;
    begin_pace(head, o.request_timeout, 0);
    while ((rc = in.in.empty() ? int(http_incomplete)
                               : parse_request(in.in.data(), in.in.size(), &request, in.headers,
                                               http_max_headers, &status)) == http_incomplete) {
        if (in.in.empty() && kept_alive) {
            if (wait_for_next_request(link, in.in, worker, o.keepalive_timeout) <= 0) return -1;
            begin_pace(head, o.request_timeout, 0);
            continue;
        }
        long n = read_paced(link, in.in, head);
        if (n < 0 && errno == ETIMEDOUT) {
            if (!in.in.empty()) send_error(in, o, link, 408);
            return -1;
        }
        if (n <= 0) return -1;
    }
    if (rc == http_malformed) {
        send_error(in, o, link, status);
        return -1;
    }
    return rc;
}

// Puts the request line on the scoreboard as soon as it is known: a worker
// that dies reading the body is logged with it.
static void note_request_line(Worker &worker, const HttpRequest &request) {
    char line[128], *at = line;  // "method target HTTP/1.x", both cut short
    at = std::copy_n(request.method.data(), std::min<size_t>(request.method.size(), 16), at);
    *at++ = ' ';
    at = std::copy_n(request.target.data(), std::min<size_t>(request.target.size(), 96), at);
    memcpy(at, request.minor_version ? " HTTP/1.1" : " HTTP/1.0", 10);
    worker.note_request(line);
}

// Reads until the body after the head at in.in[0, head_length) is whole:
// Content-Length bytes into in.in, or a chunked body decoded into in.body,
// from in.in[*decoded] on (*decoded moves past what the decoder took).
// 0 once whole; else the status to answer (413, 400, 408), or -1 when the
// client left or the read failed.
PREFORK_COLD static int receive_body(ServiceState &in, const HttpOptions &o, Link &link, const HttpRequestInfo &info,
                        size_t head_length, size_t *decoded) {
    Pace pace;
    begin_pace(pace, o.request_timeout, o.min_rate);
    ChunkedDecoder decoder;
    in.body.clear();
    for (;;) {
        // Chunk sizes, extensions and trailers are not body: bound the raw
        // bytes too, or a client could feed them forever.
        if (in.in.size() - head_length > o.max_body + 65536) return 413;
        if (info.chunked) {
            bool too_large = false;
            long used = decoder.feed(in.in.data() + *decoded, in.in.size() - *decoded, &in.body, o.max_body,
                                     &too_large);
            if (used < 0) return too_large ? 413 : 400;
            *decoded += size_t(used);
            if (decoder.done()) return 0;
        } else if (in.in.size() - head_length >= info.content_length) {
            return 0;
        }
        long n = read_paced(link, in.in, pace);
        if (n <= 0) return n < 0 && errno == ETIMEDOUT ? 408 : -1;
    }
}

// Reading the body may have moved the input buffer, and the request's views
// (method, target, fields) point into the old one: parses the head again,
// from the same bytes, for views into the new one.
PREFORK_COLD static void reparse_moved_head(ServiceState &in, const char *head_was_at, size_t head_length,
                               HttpRequest &request) {
    if (in.in.data() == head_was_at) return;
    int status = 0;
    (void)parse_request(in.in.data(), head_length, &request, in.headers, http_max_headers, &status);
}

// Reads or decodes the body that follows the head, before the handler
// runs. On return *body views it and *next is where the next request
// starts in in.in. false when the connection is to close: the client left,
// or an error was answered.
PREFORK_COLD static bool read_body(ServiceState &in, const HttpOptions &o, Link &link, HttpRequest &request,
                      const HttpRequestInfo &info, size_t head_length, std::string_view *body, size_t *next) {
    if (info.has_content_length && info.content_length > o.max_body) {
        send_error(in, o, link, 413);
        return false;
    }
    if (info.expect_continue && request.minor_version == 1 && in.in.size() == head_length)
        (void)send_text(link, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    const char *head_at = in.in.data();
    size_t decoded = head_length;
    int error = receive_body(in, o, link, info, head_length, &decoded);
    if (error) {
        if (error > 0) send_error(in, o, link, error);
        return false;
    }
    reparse_moved_head(in, head_at, head_length, request);
    if (info.chunked) {
        *body = in.body;
        *next = decoded;
    } else {
        *body = std::string_view(in.in.data() + head_length, size_t(info.content_length));
        *next = head_length + size_t(info.content_length);
    }
    return true;
}

// Fills in.context, what the handler sees, from the request. false when
// the request deserves a 400: the path does not start with "/", does not
// percent-decode or has a dot segment, or the target is "*" with a method
// other than OPTIONS.
static bool fill_context(ServiceState &in, Worker &worker, const HttpRequest &request, std::string_view body) {
    HttpContext &ctx = in.context;
    ctx.method = request.method;
    ctx.target = request.target;
    ctx.minor_version = request.minor_version;
    ctx.headers = request.headers;
    ctx.header_count = request.header_count;
    ctx.body = body;
    ctx.worker = &worker;
    split_target(request.target, &ctx.raw_path, &ctx.query);
    if (request.target == "*") {
        in.path = "*";
        return request.method == "OPTIONS";  // the asterisk-form is OPTIONS' alone
    }
    if (ctx.raw_path.empty() || ctx.raw_path[0] != '/' || !percent_decode(ctx.raw_path, &in.path) ||
        has_dot_segment(in.path))
        return false;
    ctx.path = in.path;
    return true;
}

// The whole request line, as a view: the parser allowed exactly
// "method SP target SP HTTP/1.x" there.
static std::string_view request_line(const HttpRequest &request) {
    const char *end = request.target.data() + request.target.size() + 9;
    return std::string_view(request.method.data(), size_t(end - request.method.data()));
}

// Routes the request to its handler, sends the answer, counts and logs it.
// Whether the connection may carry another request.
static bool answer(ServiceState &in, const HttpOptions &o, Link &link, Worker &worker, const HttpRequest &request,
                   bool keep_alive, std::string_view body) {
    HttpResponse &r = in.response;
    HttpResponder::reset(r);
    worker.set_activity('W');
    in.context.fd = link.fd;
    in.remote_user.clear();
    if (!fill_context(in, worker, request, body)) {
        send_error(in, o, link, 400);
        return false;
    }
    bool head = request.method == "HEAD";
    ResponseStream stream{&in, &o, &link, &worker, head, keep_alive, request.minor_version};
    HttpResponder::attach(r, &stream);
    dispatch(in, in.context, r);
    HttpResponder::attach(r, nullptr);
    if (stream.started) {
        bool keep = end_stream(stream, r);
        worker.count_request(nullptr, stream.sent);
        log_access(in, o, &in.context, request_line(request), stream.status, stream.body_bytes);
        return keep;
    }
    if (stream.cut) {  // aborted before the head went out
        HttpResponder::reset(r);
        answer_status(in, r, 500);
        render_answer(in, &worker, &in.context, r);
        r.close_connection();
    }
    bool keep = keep_alive && !HttpResponder::closing(r) && !worker.stopping() && !worker.pool_full();
    uint64_t body_bytes = head || bodiless_status(r.status()) ? 0 : HttpResponder::body_length(r);
    int answered = r.status();
    uint64_t sent = 0;
    if (!send_response(in, o, link, r, head, keep, request.minor_version, &sent))
        keep = false;
    worker.count_request(nullptr, sent);
    log_access(in, o, &in.context, request_line(request), answered, body_bytes);
    return keep;
}

// Serves the requests of one connection: reads a head, reads its body,
// answers, and goes round again while the connection is kept alive, with
// pipelined bytes already in the input.
static void serve_requests(ServiceState &in, const HttpOptions &o, Worker &worker, int fd) {
    Link link = client_link(o, worker, fd);
    // Deadlines are kept to within a tenth of the shortest timeout.
    double shortest = std::min({o.request_timeout, o.keepalive_timeout, o.pressure_timeout});
    link.tick_ms = int(std::max(10.0, std::min(100.0, shortest * 100)));
    in.in.clear();
    worker.set_activity('R');
    for (bool kept_alive = false;; kept_alive = true) {
        HttpRequest request;
        int head_length = read_head(in, o, link, worker, kept_alive, request);
        if (head_length < 0) return;
        HttpRequestInfo info;
        int status = 0;
        if (check_request(request, &info, &status) < 0) return send_error(in, o, link, status);
        note_request_line(worker, request);
        std::string_view body;
        size_t next = size_t(head_length);  // where the next request starts
        if ((info.chunked || info.has_content_length) &&
            !read_body(in, o, link, request, info, size_t(head_length), &body, &next))
            return;
        if (!answer(in, o, link, worker, request, info.keep_alive, body)) return;
        in.in.erase(0, next);  // pipelined bytes stay for the next round
    }
}

void HttpService::serve(Worker &worker, int fd) {
    ServiceState &in = *in_;
    note_peer(in, options_, worker);
    serve_requests(in, options_, worker, fd);
    if (in.linger) {
        in.linger = false;
        linger_before_close(fd);
    }
    flush_log(in, options_);
}

PREFORK_COLD void HttpService::refuse(Worker &worker, int fd) {
    ServiceState &in = *in_;
    note_peer(in, options_, worker);
    Link link = client_link(options_, worker, fd);
    link.send_timeout = std::min(options_.send_timeout, 2.0);  // a refusal is not worth a long wait
    HttpResponse &r = in.response;
    HttpResponder::reset(r);
    answer_status(in, r, 503);
    r.header("Retry-After", "1");
    render_answer(in, &worker, nullptr, r);
    uint64_t sent = 0, body = HttpResponder::body(r).size();
    (void)send_response(in, options_, link, r, false, false, 1, &sent);
    log_access(in, options_, nullptr, "-", 503, body);
    // Take what the client has already sent, without waiting for more, so
    // that the close is a FIN rather than a reset.
    char sink[4096];
    for (int i = 0; i < 16 && sys::receive(fd, sink, sizeof sink, false) > 0; i++) {
    }
    shutdown(fd, SHUT_WR);
    flush_log(in, options_);
}

}  // namespace prefork
