/*
 * clone-helper: what the agent (Node: no ioctl, no clock_settime) needs to
 * make a VM restored from a template its own (docs/templates.md).
 *
 *   clone-helper reseed          reads up to 512 bytes of host entropy on
 *                                stdin, adds them to the kernel's input pool
 *                                (RNDADDENTROPY, credited) and forces the
 *                                CRNG to reseed (RNDRESEEDCRNG): every clone
 *                                restored from one frozen guest would
 *                                otherwise hand out the same random bytes
 *                                until its next scheduled reseed.
 *   clone-helper settime S US    sets CLOCK_REALTIME to S seconds + US
 *                                microseconds (the host's clock; a clone's
 *                                clock resumes from the template's moment).
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
  fprintf(stderr, "clone-helper: %s: %s\n", what, strerror(errno));
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
    fprintf(stderr, "clone-helper: seed too short (%zu bytes, need at least 16)\n", n);
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
    fprintf(stderr, "clone-helper: bad seconds %s\n", s);
    return 1;
  }
  long usec = strtol(us, &end, 10);
  if (errno || *end || usec < 0 || usec > 999999) {
    fprintf(stderr, "clone-helper: bad microseconds %s\n", us);
    return 1;
  }
  struct timespec ts = {.tv_sec = (time_t)sec, .tv_nsec = usec * 1000};
  if (clock_settime(CLOCK_REALTIME, &ts) < 0) return fail("clock_settime");
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "reseed") == 0) return reseed();
  if (argc == 4 && strcmp(argv[1], "settime") == 0) return settime(argv[2], argv[3]);
  fprintf(stderr, "usage: clone-helper reseed < seed | clone-helper settime SECONDS MICROSECONDS\n");
  return 2;
}
