// A C++ program that lets go of its lock the way C++ programs do: in the
// destructor of a guard object that outlives main (a static, a function-local
// static, a thread_local). test_lifecycle runs it as
//
//     lifecycle_cxx MODE PATH
//
// MODE: static-release, static-complete, local-static, thread-local,
// main-thread-local. main acquires PATH into the guard and returns; the
// destructor releases (or completes) it after main, when the C and C++
// runtimes are tearing the process down, and checks every answer.
//
// Exit status: 0 all well; 2 usage; 3 acquire failed in main; 4 the release
// (or complete) in the destructor did not answer HPCLOCK_OK; 5 hpclock_last_error
// after it was not ""; 6 a second release did not answer HPCLOCK_E_INVALID or left
// no message; 7 the destructor never ran; 8 the thread's lock was not let go
// when the thread ended. A broken library shows as a signal (SIGABRT).
#include "hpclock.h"

#include <cstdio>
#include <cstring>
#include <thread>
#include <unistd.h>

namespace {

enum class Finish { release, complete };

bool destructor_ran = false;

class Guard {
public:
    Guard() : handle_(0), finish_(Finish::release) {}

    Guard(const Guard &) = delete;
    Guard &operator=(const Guard &) = delete;

    bool take(const char *path, Finish finish) {
        finish_ = finish;
        hpclock_options opts;
        hpclock_options_init(&opts);
        opts.label = "lifecycle_cxx guard";
        int32_t rc = hpclock_acquire(path, &opts, &handle_);
        if (rc != HPCLOCK_OK) {
            std::fprintf(stderr, "lifecycle_cxx: acquire %s: %s: %s\n", path, hpclock_status_name(rc),
                         hpclock_last_error());
            return false;
        }
        return true;
    }

    ~Guard() {
        if (handle_ == 0) return; // never took the lock: main has already failed
        destructor_ran = true;
        const char *what = finish_ == Finish::complete ? "hpclock_complete" : "hpclock_release";
        int32_t rc = finish_ == Finish::complete ? hpclock_complete(handle_) : hpclock_release(handle_);
        if (rc != HPCLOCK_OK) {
            std::fprintf(stderr, "lifecycle_cxx: %s in a destructor answered %s: %s\n", what,
                         hpclock_status_name(rc), hpclock_last_error());
            _exit(4);
        }
        const char *error = hpclock_last_error();
        if (error == nullptr || error[0] != '\0') {
            std::fprintf(stderr, "lifecycle_cxx: after %s answered OK, hpclock_last_error() is \"%s\"\n", what,
                         error ? error : "(NULL)");
            _exit(5);
        }
        rc = hpclock_release(handle_);
        error = hpclock_last_error();
        if (rc != HPCLOCK_E_INVALID || error == nullptr || error[0] == '\0') {
            std::fprintf(stderr, "lifecycle_cxx: a second release answered %s, message \"%s\"\n",
                         hpclock_status_name(rc), error ? error : "(NULL)");
            _exit(6);
        }
        handle_ = 0;
    }

private:
    hpclock_handle handle_;
    Finish finish_;
};

Guard global_guard;

Guard &local_guard() {
    static Guard guard;
    return guard;
}

// Checked at the very end of the run: the destructors of statics registered
// before this one run after it, so it only watches the thread_local cases.
struct ExitCheck {
    bool armed = false;
    ~ExitCheck() {
        if (armed && !destructor_ran) {
            std::fprintf(stderr, "lifecycle_cxx: the guard's destructor never ran\n");
            _exit(7);
        }
    }
};

} // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: lifecycle_cxx static-release|static-complete|local-static|"
                             "thread-local|main-thread-local PATH\n");
        return 2;
    }
    const char *mode = argv[1];
    const char *path = argv[2];
    if (std::strcmp(mode, "static-release") == 0) {
        return global_guard.take(path, Finish::release) ? 0 : 3;
    }
    if (std::strcmp(mode, "static-complete") == 0) {
        return global_guard.take(path, Finish::complete) ? 0 : 3;
    }
    if (std::strcmp(mode, "local-static") == 0) {
        // Constructed here, before this program's first hpclock call.
        return local_guard().take(path, Finish::release) ? 0 : 3;
    }
    if (std::strcmp(mode, "thread-local") == 0) {
        // The thread's guard is constructed before the thread's first hpclock
        // call, so its destructor runs after the library's own thread-locals
        // are destroyed (thread_local destructors run in reverse order).
        bool taken = false;
        std::thread worker([&taken, path] {
            thread_local Guard guard;
            taken = guard.take(path, Finish::release);
        });
        worker.join();
        if (!taken) return 3;
        if (!destructor_ran) {
            std::fprintf(stderr, "lifecycle_cxx: the thread's guard was not destroyed when the thread ended\n");
            return 7;
        }
        hpclock_holder info;
        int32_t rc = hpclock_holder_info(path, &info);
        if (rc != HPCLOCK_OK || info.state != HPCLOCK_STATE_FREE) {
            std::fprintf(stderr, "lifecycle_cxx: after the thread ended: holder_info %s, state %d\n",
                         hpclock_status_name(rc), (int)info.state);
            return 8;
        }
        return 0;
    }
    if (std::strcmp(mode, "main-thread-local") == 0) {
        static ExitCheck exit_check;
        exit_check.armed = true;
        thread_local Guard guard; // destroyed by exit(), after the library's thread-locals
        return guard.take(path, Finish::release) ? 0 : 3;
    }
    std::fprintf(stderr, "lifecycle_cxx: unknown mode %s\n", mode);
    return 2;
}
