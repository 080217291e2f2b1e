/*
 * sys-helper: the system calls the agent (Node: no ioctl, no
 * clock_settime, no pre-exec hook) cannot make itself.
 *
 *   sys-helper reseed          reads up to 512 bytes of host entropy on
 *                                stdin, adds them to the kernel's input pool
 *                                (RNDADDENTROPY, credited) and forces the
 *                                CRNG to reseed (RNDRESEEDCRNG): every clone
 *                                restored from one frozen guest would
 *                                otherwise hand out the same random bytes
 *                                until its next scheduled reseed.
 *   sys-helper settime S US    sets CLOCK_REALTIME to S seconds + US
 *                                microseconds (the host's clock; a clone's
 *                                clock resumes from the template's moment).
 *   sys-helper oom-exec ADJ -- CMD ARGS...
 *                                writes ADJ to /proc/self/oom_score_adj and
 *                                execs CMD: the agent runs at -1000 (never
 *                                the guest OOM killer's choice) and the OCI
 *                                runtime must not hand that to containers
 *                                (crun 1.8.1 writes a spec's oomScoreAdj only
 *                                when it is not 0: measured).
 *
 * Exit status 0 on success; on failure a message on stderr and status 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_SEED 512

static int fail(const char *what) {
  fprintf(stderr, "sys-helper: %s: %s\n", what, strerror(errno));
  return 1;
}

static int reseed(void) {
  struct {
    struct rand_pool_info info;
    unsigned char buf[MAX_SEED];
  } req;
  size_t n = 0;
  while (n < MAX_SEED) {
    ssize_t r = read(0, req.buf + n, MAX_SEED - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail("read seed");
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  if (n < 16) {
    fprintf(stderr, "sys-helper: seed too short (%zu bytes, need at least 16)\n", n);
    return 1;
  }
  int fd = open("/dev/random", O_RDWR | O_CLOEXEC);
  if (fd < 0) return fail("open /dev/random");
  req.info.entropy_count = (int)(n * 8);
  req.info.buf_size = (int)n;
  if (ioctl(fd, RNDADDENTROPY, &req.info) < 0) return fail("RNDADDENTROPY");
  if (ioctl(fd, RNDRESEEDCRNG) < 0) return fail("RNDRESEEDCRNG");
  close(fd);
  return 0;
}

static int settime(const char *s, const char *us) {
  char *end;
  errno = 0;
  long long sec = strtoll(s, &end, 10);
  if (errno || *end || sec < 0) {
    fprintf(stderr, "sys-helper: bad seconds %s\n", s);
    return 1;
  }
  long usec = strtol(us, &end, 10);
  if (errno || *end || usec < 0 || usec > 999999) {
    fprintf(stderr, "sys-helper: bad microseconds %s\n", us);
    return 1;
  }
  struct timespec ts = {.tv_sec = (time_t)sec, .tv_nsec = usec * 1000};
  if (clock_settime(CLOCK_REALTIME, &ts) < 0) return fail("clock_settime");
  return 0;
}

static int oom_exec(const char *adj, char **argv) {
  char *end;
  errno = 0;
  long v = strtol(adj, &end, 10);
  if (errno || *end || v < -1000 || v > 1000) {
    fprintf(stderr, "sys-helper: bad oom_score_adj %s\n", adj);
    return 1;
  }
  int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail("open /proc/self/oom_score_adj");
  if (write(fd, adj, strlen(adj)) < 0) return fail("write /proc/self/oom_score_adj");
  close(fd);
  execvp(argv[0], argv);
  fprintf(stderr, "sys-helper: exec %s: %s\n", argv[0], strerror(errno));
  return 127;
}

int main(int argc, char **argv) {
  if (argc >= 5 && strcmp(argv[1], "oom-exec") == 0 && strcmp(argv[3], "--") == 0) return oom_exec(argv[2], argv + 4);
  if (argc == 2 && strcmp(argv[1], "reseed") == 0) return reseed();
  if (argc == 4 && strcmp(argv[1], "settime") == 0) return settime(argv[2], argv[3]);
  fprintf(stderr, "usage: sys-helper reseed < seed | sys-helper settime SECONDS MICROSECONDS | sys-helper oom-exec ADJ -- CMD ARGS...\n");
  return 2;
}
