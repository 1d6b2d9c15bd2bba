/* An open-loop HTTP/1.1 load generator in C, for bench/loadgen.py's open_loop_c().

   Requests are scheduled at a fixed rate (request i is due at t0 + i / rate) whatever the
   server does; a due request takes an idle keep-alive connection, or opens one (up to MAXCONN),
   or waits for one. Latency is measured from the *scheduled* time, so stalls and queueing
   count in full (no coordinated omission). One thread, epoll, no allocation per request: it
   uses a few percent of a core where the Python generator used up to a whole one, so the
   server under test keeps the box's cores.

   No maintained Debian package does this (wrk holds no constant rate; wrk2 is not packaged;
   h2load measures from the send, not the schedule), hence these 300 lines.

   usage: openloop HOST PORT RATE DURATION MAXCONN DRAIN_TIMEOUT REQFILE OUTFILE
   REQFILE: records of [uint32 little-endian length][request bytes].
   OUTFILE: one line per request "index status outcome latency_us" (status -1: connection
   error), then "#summary duration_s client_cpu_s max_open resent errors late sent".
   outcome: 1 accepted, 2 duplicate, 3 other 2xx, 4 failed (as in loadgen.py). */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define KEEPALIVE_REUSE 4.0 /* uvicorn closes idle keep-alive connections after 5 s */
#define RBUF 65536

enum { FREE, CONNECTING, IDLE, BUSY };

typedef struct {
    int fd, state, req, stacked;
    size_t woff, rlen;
    double last_used;
    char rbuf[RBUF];
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char **reqs;
static uint32_t *lens;
static int nreq;
static conn_t *conns;
static int maxconn, nopen, maxopen, ep;
static struct sockaddr_in addr;
static int *status_of, *outcome_of;
static long *latency_of;
static int *queue, qhead, qtail; /* ring of request indices waiting for a connection */
static int *idle_stack, nidle;
static int completed, errors, resent;
static unsigned char *tries; /* per request: sent again after a keep-alive close */
static double t0, rate;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("REQFILE");
    int cap = 1024;
    reqs = malloc(cap * sizeof *reqs);
    lens = malloc(cap * sizeof *lens);
    uint32_t n;
    while (fread(&n, 4, 1, f) == 1) {
        if (nreq == cap) {
            cap *= 2;
            reqs = realloc(reqs, cap * sizeof *reqs);
            lens = realloc(lens, cap * sizeof *lens);
        }
        reqs[nreq] = malloc(n);
        if (fread(reqs[nreq], 1, n, f) != n) die("REQFILE truncated");
        lens[nreq++] = n;
    }
    fclose(f);
}

static void watch(conn_t *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void close_conn(conn_t *c) {
    close(c->fd);
    c->state = FREE;
    c->fd = -1;
    nopen--;
}

static void finish(int i, int status, int outcome) {
    status_of[i] = status;
    outcome_of[i] = outcome;
    latency_of[i] = status < 0 ? -1 : (long)((now() - (t0 + i / rate)) * 1e6);
    if (status < 0) errors++;
    completed++;
}

static void send_more(conn_t *c) {
    while (c->woff < lens[c->req]) {
        ssize_t w = write(c->fd, reqs[c->req] + c->woff, lens[c->req] - c->woff);
        if (w < 0) {
            if (errno == EAGAIN) {
                watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
                return;
            }
            return; /* the read side sees the close */
        }
        c->woff += (size_t)w;
    }
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

static void start(conn_t *c, int i) {
    c->req = i;
    c->woff = 0;
    c->rlen = 0;
    c->state = BUSY;
    send_more(c);
}

static conn_t *open_conn(void) {
    for (int k = 0; k < maxconn; k++) {
        conn_t *c = &conns[k];
        if (c->state != FREE) continue;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) return NULL;
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
        if (r < 0 && errno != EINPROGRESS) {
            close(c->fd);
            return NULL;
        }
        c->state = CONNECTING;
        nopen++;
        if (nopen > maxopen) maxopen = nopen;
        watch(c, EPOLLOUT, EPOLL_CTL_ADD);
        return c;
    }
    return NULL;
}

/* Hand waiting requests to idle connections, opening new ones while allowed. */
static void dispatch(void) {
    while (qhead != qtail) {
        conn_t *c = NULL;
        while (nidle > 0) {
            conn_t *cand = &conns[idle_stack[--nidle]];
            cand->stacked = 0;
            if (cand->state == IDLE && now() - cand->last_used < KEEPALIVE_REUSE) {
                c = cand;
                break;
            }
            if (cand->state == IDLE) close_conn(cand);
        }
        if (c) {
            start(c, queue[qhead]);
            qhead = (qhead + 1) % (nreq + 1);
            continue;
        }
        if (nopen < maxconn) {
            conn_t *fresh = open_conn();
            if (!fresh) { /* cannot connect at all: fail the request */
                finish(queue[qhead], -1, 4);
                qhead = (qhead + 1) % (nreq + 1);
                continue;
            }
            fresh->req = queue[qhead]; /* sent once connected */
            qhead = (qhead + 1) % (nreq + 1);
            continue;
        }
        return; /* every connection busy: the request waits (and its latency grows) */
    }
}

static void requeue_front(int i) {
    qhead = (qhead - 1 + nreq + 1) % (nreq + 1);
    queue[qhead] = i;
}

static int classify(int status, const char *body, size_t len) {
    if (status >= 200 && status < 300) {
        if (memmem(body, len, "accepted", 8)) return 1;
        if (memmem(body, len, "duplicate", 9)) return 2;
        return 3;
    }
    return 4;
}

/* A complete answer in the buffer: handle it and return 1; 0 if more bytes are needed. */
static int answered(conn_t *c) {
    char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - c->rbuf);
    size_t length = 0;
    for (char *p = c->rbuf; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        if (*p == '\n') p++;
        if ((size_t)(end - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) {
            length = strtoul(p + 15, NULL, 10);
            break;
        }
    }
    if (c->rlen < head + 4 + length) return 0;
    int status = (int)strtol(c->rbuf + 9, NULL, 10);
    finish(c->req, status, classify(status, end + 4, length));
    c->state = IDLE;
    c->last_used = now();
    if (!c->stacked) {
        c->stacked = 1;
        idle_stack[nidle++] = (int)(c - conns);
    }
    return 1;
}

static void on_event(conn_t *c, uint32_t events) {
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            int i = c->req;
            close_conn(c);
            finish(i, -1, 4);
            return;
        }
        start(c, c->req);
        return;
    }
    if (c->state != BUSY) { /* an idle connection closed by the server */
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            char b[256];
            if (read(c->fd, b, sizeof b) <= 0) close_conn(c);
        }
        return;
    }
    if (events & EPOLLOUT) send_more(c);
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    for (;;) {
        if (c->rlen == RBUF) { /* an answer larger than we parse: count it failed */
            int i = c->req;
            close_conn(c);
            finish(i, -1, 4);
            return;
        }
        ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
        if (r > 0) {
            c->rlen += (size_t)r;
            if (answered(c)) return;
            continue;
        }
        if (r < 0 && errno == EAGAIN) return;
        /* Closed. Before a byte of the answer: the server did not take the request (a
           keep-alive close racing our write), so it is sent once more. */
        int i = c->req, fresh = c->rlen == 0 && tries[i] == 0;
        close_conn(c);
        if (fresh) {
            resent++;
            tries[i]++;
            requeue_front(i);
        } else {
            finish(i, -1, 4);
        }
        return;
    }
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s HOST PORT RATE DURATION MAXCONN DRAIN REQFILE OUTFILE\n",
                argv[0]);
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) die("HOST (an IPv4 address)");
    rate = atof(argv[3]);
    double duration = atof(argv[4]), drain = atof(argv[6]);
    maxconn = atoi(argv[5]);
    load(argv[7]);
    int total = (int)(rate * duration);
    if (total > nreq) total = nreq;
    conns = calloc((size_t)maxconn, sizeof *conns);
    idle_stack = calloc((size_t)maxconn, sizeof *idle_stack);
    queue = calloc((size_t)nreq + 1, sizeof *queue);
    status_of = calloc((size_t)nreq, sizeof *status_of);
    outcome_of = calloc((size_t)nreq, sizeof *outcome_of);
    latency_of = calloc((size_t)nreq, sizeof *latency_of);
    tries = calloc((size_t)nreq, 1);
    for (int k = 0; k < maxconn; k++) conns[k].fd = -1;
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");

    struct epoll_event events[256];
    t0 = now() + 0.05;
    int next = 0;
    double deadline = t0 + duration + drain;
    while (completed < total && now() < deadline) {
        double t = now();
        while (next < total && t0 + next / rate <= t) {
            queue[qtail] = next++;
            qtail = (qtail + 1) % (nreq + 1);
        }
        dispatch();
        int timeout_ms = 100;
        if (next < total) {
            double gap = t0 + next / rate - now();
            timeout_ms = gap <= 0 ? 0 : (int)(gap * 1000) + 1;
        }
        int n = epoll_wait(ep, events, 256, timeout_ms);
        for (int k = 0; k < n; k++) on_event(events[k].data.ptr, events[k].events);
    }
    double elapsed = now() - t0;

    FILE *out = fopen(argv[8], "w");
    if (!out) die("OUTFILE");
    int late = 0;
    for (int i = 0; i < total; i++) {
        if (outcome_of[i] == 0) {
            late++;
            continue;
        }
        fprintf(out, "%d %d %d %ld\n", i, status_of[i], outcome_of[i], latency_of[i]);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    fprintf(out, "#summary %.6f %.6f %d %d %d %d %d\n", elapsed, cpu, maxopen, resent, errors,
            late, total);
    fclose(out);
    return 0;
}
