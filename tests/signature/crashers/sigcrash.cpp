// Crashes on purpose, in ways whose signatures must group (or not) across runs.
//   sigcrash throw   uncaught C++ exception from handle_request(): SIGABRT via std::terminate
//   sigcrash null    call through a NULL function pointer from dispatch(): pc 0
//   sigcrash null2   the same from dispatch_other(): a different population
//   sigcrash free    double free from release_buffer(): SIGABRT from glibc's malloc checks
#include <cstdlib>
#include <cstring>
#include <stdexcept>

typedef void (*handler_t)(int);
static volatile handler_t no_handler = nullptr;
static volatile int sink;

__attribute__((noinline)) void handle_request(int n) {
    if (n > 0) throw std::runtime_error("bad request");
    sink = n;
}

__attribute__((noinline)) void dispatch(int n) {
    no_handler(n);
    sink = n;
}

__attribute__((noinline)) void dispatch_other(int n) {
    no_handler(n + 1);
    sink = n;
}

__attribute__((noinline)) void release_buffer(char *p) {
    free(p);
    free(p);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "throw")) handle_request(argc);
    if (!strcmp(argv[1], "null")) dispatch(argc);
    if (!strcmp(argv[1], "null2")) dispatch_other(argc);
    if (!strcmp(argv[1], "free")) release_buffer(static_cast<char *>(malloc(32)));
    return 1;
}
