/*
 * kata-ts-jailer: starts a pod's QEMU with least privilege, in the spirit of
 * Firecracker's jailer. It runs as root (the shim starts it), does what needs
 * privilege, then execs the VMM (same pid, same start time) as an
 * unprivileged user that owns nothing on the host:
 *
 *   1. --netns PATH       setns(2) into the pod's network namespace;
 *   2. --tap FD:IFNAME    opens each pod tap there (/dev/net/tun, TUNSETIFF
 *                         IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) as descriptor FD,
 *                         for QEMU's `-netdev tap,fd=FD`;
 *   3. a mount and an IPC namespace (every mount a slave: later host mounts under a
 *                         shared source, such as a pod's shared dir, still
 *                         propagate in; nothing propagates out) whose root is
 *                         a fresh tmpfs on --root DIR holding only:
 *        --bind-ro PATH   PATH, read-only, nosuid, nodev (QEMU's binaries
 *                         and libraries under /usr, the guest image);
 *        --bind PATH      PATH, read-write, nosuid, nodev, noexec (the pod's
 *                         QEMU dir); both on every mount under PATH too;
 *        --symlink L=T    a symlink L -> T (merged /usr: /lib -> usr/lib);
 *        --dev NAME       /dev/NAME made with mknod from the host's node:
 *                         null, zero, full, random, urandom are 0666; kvm,
 *                         vhost-net are 0600 and owned by --uid;
 *        --proc           a procfs on /proc showing only the jailed uid's
 *                         own processes and nothing but them (hidepid=
 *                         invisible, subset=pid): QEMU's 9p server changes
 *                         modes through /proc/self/fd;
 *      then pivot_root(2) into it, the old root detached, and the new root
 *      remounted read-only. Each PATH lands at the same path inside, so
 *      QEMU's command line needs no translation. Bind points must not nest;
 *   4. credentials: every capability dropped from the bounding set but the
 *      --keep-cap ones, supplementary groups set to --groups (default none),
 *      then setresgid(--gid) and setresuid(--uid): no capability survives
 *      unless kept (then in the ambient set, so that it survives the exec);
 *   5. every other descriptor above 2 closed (--keep-fd N keeps N);
 *      PR_SET_NO_NEW_PRIVS, and with --pdeathsig PR_SET_PDEATHSIG(SIGKILL)
 *      (set after the uid change, which clears it);
 *   6. execv(PROGRAM, ARGS).
 *
 * Usage: kata-ts-jailer --uid N --gid N [--groups N,N...] [--netns PATH]
 *          [--tap FD:IFNAME]... [--root DIR [--bind-ro PATH]... [--bind PATH]...
 *          [--symlink L=T]... [--dev NAME]... [--proc]] [--inherit[-sealed] FD=PATH]...
 *          [--keep-fd N]... [--keep-cap NAME]... [--pdeathsig]
 *          -- PROGRAM ARGS...
 *
 * On failure: one line "kata-ts-jailer: <step>: <reason>" on stderr (QEMU's
 * log) and exit status 126, before anything runs as the jailed user.
 *
 *   kata-ts-jailer --kill-uid N
 *                       SIGKILLs every process of uid N (as N: kill(-1)),
 *                       until none is left: run when a jailed QEMU is gone,
 *                       before its dir is removed and its uid leased again.
 *
 * Two more jobs, both for VM templates:
 *
 *   --inherit-sealed FD=PATH   (with the options above) opens PATH
 *                       read-write as root, before the uid change, as
 *                       descriptor FD, and refuses it unless it is a memfd
 *                       sealed for good: a clone's guest RAM,
 *                       `mem-path=/proc/self/fd/FD` (--inherit: any file).
 *
 *   kata-ts-jailer --hold-memory [CGROUP_PROCS...]   (stdin: a template's
 *                       memory file; cwd: its template dir) first joins the
 *                       cgroups whose cgroup.procs files are given (where the
 *                       shim came from: never the pod cgroup of the pod whose
 *                       start made the template, which must be removable and
 *                       must not pay for it), then copies the file (holes stay holes)
 *                       into a memfd on descriptor 3 and seals it for good
 *                       (F_SEAL_WRITE, SHRINK, GROW, SEAL: no write(2), no
 *                       writable shared mapping, no hole punching, by anyone),
 *                       prints its size on stdout, then holds it until its
 *                       template dir is removed (checked every second) or
 *                       SIGTERM. QEMU 7.2 opens a guest RAM file read-write
 *                       even for a private copy-on-write mapping: without the
 *                       seals a clone could change pages every clone of the
 *                       template shares. Clones get /proc/<pid>/fd/3.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_ITEMS 64
#define EXIT_JAIL 126

static void die(const char *fmt, ...) {
  int e = errno;
  va_list ap;
  fputs("kata-ts-jailer: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (e) fprintf(stderr, ": %s", strerror(e));
  fputc('\n', stderr);
  exit(EXIT_JAIL);
}

#define DIE(...) do { errno = 0; die(__VA_ARGS__); } while (0)

struct tap { int fd; const char *name; };
struct inherit { int fd; const char *path; int sealed; };

struct opts {
  long uid, gid;
  gid_t groups[MAX_ITEMS];
  int ngroups;
  const char *netns;
  struct tap taps[MAX_ITEMS];
  int ntaps;
  struct inherit inherits[MAX_ITEMS];
  int ninherits;
  const char *root;
  const char *binds_ro[MAX_ITEMS];
  int nbinds_ro;
  const char *binds_rw[MAX_ITEMS];
  int nbinds_rw;
  const char *symlinks[MAX_ITEMS];
  int nsymlinks;
  const char *devs[MAX_ITEMS];
  int ndevs;
  int keep[MAX_ITEMS];
  int nkeep;
  int pdeathsig;
  int proc;
  int keep_fds[MAX_ITEMS];
  int nkeep_fds;
  char **argv;
};

static long number(const char *s, const char *what, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < min || v > max) DIE("%s: not a number in [%ld, %ld]: %s", what, min, max, s);
  return v;
}

static void add(const char **list, int *n, const char *v, const char *what) {
  if (*n >= MAX_ITEMS) DIE("too many %s", what);
  if (v[0] != '/' && strcmp(what, "--dev") != 0) DIE("%s: not an absolute path: %s", what, v);
  list[(*n)++] = v;
}

/* "FD<sep>REST" (--tap 10:tap0, --inherit 4=/proc/…): the descriptor, 3..1023, and a non-empty REST. */
static int fd_spec(const char *opt, const char *v, char sep, const char **rest) {
  const char *p = strchr(v, sep);
  char fd[16];
  if (!p || p == v || p[1] == 0 || (size_t)(p - v) >= sizeof fd) DIE("%s: want FD%cVALUE, got %s", opt, sep, v);
  memcpy(fd, v, (size_t)(p - v));
  fd[p - v] = 0;
  *rest = p + 1;
  return (int)number(fd, opt, 3, 1023);
}

static const struct { const char *name; int cap; } CAPS[] = {
  { "chown", CAP_CHOWN },
  { "dac_override", CAP_DAC_OVERRIDE },
  { "fowner", CAP_FOWNER },
  { "fsetid", CAP_FSETID },
};

static void parse(int argc, char **argv, struct opts *o) {
  memset(o, 0, sizeof *o);
  o->uid = o->gid = -1;
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) { i++; break; }
    if (strcmp(a, "--pdeathsig") == 0) { o->pdeathsig = 1; continue; }
    if (strcmp(a, "--proc") == 0) { o->proc = 1; continue; }
    if (i + 1 >= argc) DIE("%s: needs a value", a);
    const char *v = argv[++i];
    if (strcmp(a, "--uid") == 0) o->uid = number(v, a, 1, 0xfffffffeL);
    else if (strcmp(a, "--gid") == 0) o->gid = number(v, a, 1, 0xfffffffeL);
    else if (strcmp(a, "--groups") == 0) {
      char *copy = strdup(v), *save = NULL;
      for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->ngroups >= MAX_ITEMS) DIE("too many --groups");
        o->groups[o->ngroups++] = (gid_t)number(t, a, 1, 0xfffffffeL);
      }
    } else if (strcmp(a, "--netns") == 0) o->netns = v;
    else if (strcmp(a, "--tap") == 0) {
      if (o->ntaps >= MAX_ITEMS) DIE("too many --tap");
      struct tap *t = &o->taps[o->ntaps++];
      t->fd = fd_spec(a, v, ':', &t->name);
      if (strlen(t->name) >= IFNAMSIZ) DIE("--tap: interface name too long: %s", t->name);
    } else if (strcmp(a, "--inherit") == 0 || strcmp(a, "--inherit-sealed") == 0) {
      if (o->ninherits >= MAX_ITEMS) DIE("too many --inherit");
      struct inherit *in = &o->inherits[o->ninherits++];
      in->fd = fd_spec(a, v, '=', &in->path);
      in->sealed = strcmp(a, "--inherit-sealed") == 0;
      if (in->path[0] != '/') DIE("--inherit: not an absolute path: %s", in->path);
    } else if (strcmp(a, "--keep-fd") == 0) {
      if (o->nkeep_fds >= MAX_ITEMS) DIE("too many --keep-fd");
      o->keep_fds[o->nkeep_fds++] = (int)number(v, a, 3, 1023);
    } else if (strcmp(a, "--root") == 0) o->root = v;
    else if (strcmp(a, "--bind-ro") == 0) add(o->binds_ro, &o->nbinds_ro, v, a);
    else if (strcmp(a, "--bind") == 0) add(o->binds_rw, &o->nbinds_rw, v, a);
    else if (strcmp(a, "--symlink") == 0) add(o->symlinks, &o->nsymlinks, v, a);
    else if (strcmp(a, "--dev") == 0) add(o->devs, &o->ndevs, v, a);
    else if (strcmp(a, "--keep-cap") == 0) {
      int found = -1;
      for (size_t k = 0; k < sizeof CAPS / sizeof CAPS[0]; k++) if (strcmp(v, CAPS[k].name) == 0) found = CAPS[k].cap;
      if (found < 0) DIE("--keep-cap: %s is not one a VMM may keep (chown, dac_override, fowner, fsetid)", v);
      if (o->nkeep >= MAX_ITEMS) DIE("too many --keep-cap");
      o->keep[o->nkeep++] = found;
    } else DIE("unknown option %s", a);
  }
  if (o->uid < 0 || o->gid < 0) DIE("--uid and --gid are required (and never 0)");
  if (i >= argc) DIE("no program after --");
  if (argv[i][0] != '/') DIE("program must be an absolute path: %s", argv[i]);
  if (!o->root && (o->nbinds_ro || o->nbinds_rw || o->nsymlinks || o->ndevs || o->proc)) DIE("--bind, --symlink, --dev and --proc need --root");
  o->argv = argv + i;
}

/* PATH opened read-write as descriptor FD (not close-on-exec: QEMU inherits it). */
static void inherit_file(const struct inherit *in) {
  int fd = open(in->path, O_RDWR | O_CLOEXEC);
  if (fd < 0) die("inherit %s", in->path);
  if (in->sealed) {
    /* A template's held RAM: refuse anything but a memfd sealed for good (a recycled holder pid
       would otherwise hand QEMU some other process's descriptor). */
    const int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) die("inherit %s: not a sealed memfd", in->path);
    if ((seals & want) != want) DIE("inherit %s: seals 0x%x, want 0x%x", in->path, seals, want);
  }
  if (fd != in->fd) {
    if (dup2(fd, in->fd) < 0) die("inherit %s: dup2 to %d", in->path, in->fd);
    close(fd);
  } else if (fcntl(fd, F_SETFD, 0) < 0) die("inherit %s: clear close-on-exec", in->path);
}

static int hold_memory(int ncg, char **cgroup_procs) {
  for (int i = 0; i < ncg; i++) {
    int fd = open(cgroup_procs[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0) die("hold-memory: open %s", cgroup_procs[i]);
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (write(fd, pid, (size_t)n) != n) die("hold-memory: join %s", cgroup_procs[i]);
    close(fd);
  }
  struct stat st;
  if (fstat(0, &st) < 0) die("hold-memory: stat stdin");
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) DIE("hold-memory: stdin is not a non-empty regular file");
  int mfd = memfd_create("kata-ts-template-memory", MFD_ALLOW_SEALING);
  if (mfd < 0) die("hold-memory: memfd_create");
  if (mfd != 3) {
    if (dup2(mfd, 3) < 0) die("hold-memory: dup2 to 3");
    close(mfd);
    mfd = 3;
  }
  if (ftruncate(mfd, st.st_size) < 0) die("hold-memory: size the memfd");
  static char buf[1 << 20];
  off_t off = 0;
  for (;;) {
    off_t data = lseek(0, off, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break; /* no data past off */
      die("hold-memory: SEEK_DATA");
    }
    off_t hole = lseek(0, data, SEEK_HOLE);
    if (hole < 0) die("hold-memory: SEEK_HOLE");
    for (off_t at = data; at < hole;) {
      size_t want = (size_t)(hole - at) < sizeof buf ? (size_t)(hole - at) : sizeof buf;
      ssize_t n = pread(0, buf, want, at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) die("hold-memory: read");
      for (ssize_t done = 0; done < n;) {
        ssize_t w = pwrite(mfd, buf + done, (size_t)(n - done), at + done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("hold-memory: write the memfd");
        done += w;
      }
      at += n;
    }
    off = hole;
  }
  if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) die("hold-memory: seal");
  int dir = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) die("hold-memory: open the template dir");
  printf("%lld\n", (long long)st.st_size);
  fflush(stdout);
  /* Nothing of the caller's stays open: stdio to /dev/null. */
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) die("hold-memory: /dev/null");
  for (int i = 0; i <= 2; i++) dup2(null, i);
  close(null);
  for (;;) {
    sleep(1);
    if (fstat(dir, &st) < 0 || st.st_nlink == 0) return 0; /* the template is gone */
  }
}

static int cmp_int(const void *a, const void *b) {
  return *(const int *)a - *(const int *)b;
}

/* Every descriptor above 2 but the ones QEMU is given: nothing of the shim's leaks into the jail. */
static void close_others(const struct opts *o) {
  int keep[3 * MAX_ITEMS];
  int n = 0;
  for (int i = 0; i < o->nkeep_fds; i++) keep[n++] = o->keep_fds[i];
  for (int i = 0; i < o->ntaps; i++) keep[n++] = o->taps[i].fd;
  for (int i = 0; i < o->ninherits; i++) keep[n++] = o->inherits[i].fd;
  qsort(keep, (size_t)n, sizeof keep[0], cmp_int);
  unsigned int from = 3;
  for (int i = 0; i < n; i++) {
    if ((unsigned int)keep[i] > from && close_range(from, (unsigned int)keep[i] - 1, 0) < 0) die("close descriptors %u-%d", from, keep[i] - 1);
    if ((unsigned int)keep[i] >= from) from = (unsigned int)keep[i] + 1;
  }
  if (close_range(from, ~0U, 0) < 0) die("close descriptors from %u", from);
}

/*
 * Every process of uid N SIGKILLed, as N itself (kill(-1) reaches exactly the
 * processes a process of that uid may signal: its own uid's): what QEMU might
 * have forked is gone before its files are removed and the uid is leased again.
 */
/* Is a live (not zombie) process other than this one running with real or effective uid `uid`? */
static int uid_has_processes(long uid) {
  DIR *d = opendir("/proc");
  if (!d) die("kill-uid: /proc");
  int found = 0;
  struct dirent *e;
  while (!found && (e = readdir(d)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || pid == (long)getpid()) continue;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "re");
    if (!f) continue; /* gone meanwhile */
    int zombie = 0;
    long ruid = -1, euid = -1;
    while (fgets(line, sizeof line, f)) {
      if (strncmp(line, "State:", 6) == 0) zombie = strchr(line, 'Z') != NULL || strchr(line, 'X') != NULL;
      else if (sscanf(line, "Uid: %ld %ld", &ruid, &euid) == 2) break;
    }
    fclose(f);
    if (!zombie && (ruid == uid || euid == uid)) found = 1;
  }
  closedir(d);
  return found;
}

static int kill_uid(long uid) {
  if (setgroups(0, NULL) < 0 || setresgid((gid_t)uid, (gid_t)uid, (gid_t)uid) < 0 || setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0) die("kill-uid: become %ld", uid);
  for (int round = 0; round < 200; round++) {
    if (!uid_has_processes(uid)) return 0;
    /* As that uid, kill(-1) reaches exactly its own processes (a fork bomb's new ones next round). */
    if (kill(-1, SIGKILL) < 0 && errno != ESRCH) die("kill-uid %ld", uid);
    usleep(10000);
  }
  DIE("kill-uid %ld: processes of that uid are still running after 2 s", uid);
  return 1;
}

static void enter_netns(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("netns %s", path);
  if (setns(fd, CLONE_NEWNET) < 0) die("setns %s", path);
  close(fd);
}

static void open_tap(const struct tap *t) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("tap %s: open /dev/net/tun", t->name);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, t->name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("tap %s: TUNSETIFF", t->name);
  if (fd != t->fd) {
    /* dup2 clears close-on-exec on the copy: QEMU inherits it. */
    if (dup2(fd, t->fd) < 0) die("tap %s: dup2 to %d", t->name, t->fd);
    close(fd);
  } else if (fcntl(fd, F_SETFD, 0) < 0) die("tap %s: clear close-on-exec", t->name);
}

/* mkdir -p of PATH (absolute) under ROOT; the last component a directory, or an empty file. */
static void make_point(const char *root, const char *path, int as_file) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s%s", root, path) >= (int)sizeof buf) DIE("path too long: %s", path);
  size_t rootlen = strlen(root);
  for (char *p = buf + rootlen + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) die("mkdir %s", buf);
    *p = '/';
  }
  if (as_file) {
    int fd = open(buf, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) die("create %s", buf);
    close(fd);
  } else if (mkdir(buf, 0755) < 0 && errno != EEXIST) die("mkdir %s", buf);
}

static void bind_in(const char *root, const char *path, int readonly) {
  struct stat st;
  if (stat(path, &st) < 0) die("bind %s", path);
  make_point(root, path, !S_ISDIR(st.st_mode));
  char dst[4096];
  snprintf(dst, sizeof dst, "%s%s", root, path);
  if (mount(path, dst, NULL, MS_BIND | MS_REC, NULL) < 0) die("bind %s", path);
  /* On every mount of the copied tree, not just its top: a container's rootfs under a 9p share, say. */
  struct mount_attr attr = { .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : MOUNT_ATTR_NOEXEC) };
  if (mount_setattr(AT_FDCWD, dst, AT_RECURSIVE, &attr, sizeof attr) < 0) die("mount_setattr %s %s", path, readonly ? "read-only" : "nosuid,nodev,noexec");
}

static void symlink_in(const char *root, const char *spec) {
  const char *eq = strchr(spec, '=');
  if (!eq || eq[1] == 0) DIE("--symlink: want LINK=TARGET, got %s", spec);
  char link[4096];
  int n = snprintf(link, sizeof link, "%s%.*s", root, (int)(eq - spec), spec);
  if (n >= (int)sizeof link) DIE("path too long: %s", spec);
  if (symlink(eq + 1, link) < 0) die("symlink %s", spec);
}

static void make_dev(const char *root, const char *name, uid_t uid, gid_t gid) {
  static const char *const open_to_all[] = { "null", "zero", "full", "random", "urandom" };
  static const char *const owned[] = { "kvm", "vhost-net" };
  int shared = 0, own = 0;
  for (size_t i = 0; i < sizeof open_to_all / sizeof open_to_all[0]; i++) if (strcmp(name, open_to_all[i]) == 0) shared = 1;
  for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) if (strcmp(name, owned[i]) == 0) own = 1;
  if (!shared && !own) DIE("--dev: %s is not a device a VMM gets", name);
  char host[64], dst[4096];
  snprintf(host, sizeof host, "/dev/%s", name);
  struct stat st;
  if (stat(host, &st) < 0) die("device %s", host);
  if (!S_ISCHR(st.st_mode)) DIE("device %s: not a character device", host);
  snprintf(dst, sizeof dst, "%s/dev/%s", root, name);
  if (mknod(dst, S_IFCHR | (shared ? 0666 : 0600), st.st_rdev) < 0) die("mknod %s", dst);
  if (chmod(dst, shared ? 0666 : 0600) < 0) die("chmod %s", dst); /* mknod honours the umask */
  if (own && chown(dst, uid, gid) < 0) die("chown %s", dst);
}

static void jail(const struct opts *o) {
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC) < 0) die("unshare mount and IPC namespaces");
  /* Slaves: host mounts under a shared source keep arriving; ours never leave. */
  if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) die("make / a slave");
  const char *root = o->root;
  if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=256k,nr_inodes=1024") < 0) die("tmpfs on %s", root);
  for (int i = 0; i < o->nbinds_ro; i++) bind_in(root, o->binds_ro[i], 1);
  for (int i = 0; i < o->nbinds_rw; i++) bind_in(root, o->binds_rw[i], 0);
  for (int i = 0; i < o->nsymlinks; i++) symlink_in(root, o->symlinks[i]);
  if (o->ndevs > 0) {
    /* The device nodes need a mount without nodev: a tmpfs of their own on /dev. */
    char dev[4096];
    snprintf(dev, sizeof dev, "%s/dev", root);
    if (mkdir(dev, 0755) < 0 && errno != EEXIST) die("mkdir %s", dev);
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64") < 0) die("tmpfs on %s", dev);
    for (int i = 0; i < o->ndevs; i++) make_dev(root, o->devs[i], (uid_t)o->uid, (gid_t)o->gid);
    if (mount(NULL, dev, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) < 0) die("remount %s read-only", dev);
  }
  if (o->proc) {
    char proc[4096];
    snprintf(proc, sizeof proc, "%s/proc", root);
    if (mkdir(proc, 0555) < 0 && errno != EEXIST) die("mkdir %s", proc);
    if (mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible,subset=pid") < 0) die("procfs on %s", proc);
  }
  if (chdir(root) < 0) die("chdir %s", root);
  if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root %s", root);
  /* The old root is stacked under the new one: detach it. */
  if (umount2(".", MNT_DETACH) < 0) die("detach the old root");
  if (chdir("/") < 0) die("chdir /");
  if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) die("remount the new root read-only");
}

static int kept(const struct opts *o, int cap) {
  for (int i = 0; i < o->nkeep; i++) if (o->keep[i] == cap) return 1;
  return 0;
}

static void drop_privileges(const struct opts *o) {
  /* Up to the first number the kernel does not know (newer than our headers, too). */
  for (int c = 0;; c++) {
    if (kept(o, c)) continue;
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
      if (errno == EINVAL) break;
      die("drop capability %d from the bounding set", c);
    }
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) die("clear ambient capabilities");
  if (o->nkeep > 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) die("keep capabilities over the uid change");
  if (setgroups((size_t)o->ngroups, o->groups) < 0) die("setgroups");
  if (setresgid((gid_t)o->gid, (gid_t)o->gid, (gid_t)o->gid) < 0) die("setresgid %ld", o->gid);
  if (setresuid((uid_t)o->uid, (uid_t)o->uid, (uid_t)o->uid) < 0) die("setresuid %ld", o->uid);
  {
    /* Exactly the kept ones (none: every set empty, the inheritable one too). */
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    for (int i = 0; i < o->nkeep; i++) {
      int c = o->keep[i];
      data[c / 32].effective |= 1u << (c % 32);
      data[c / 32].permitted |= 1u << (c % 32);
      data[c / 32].inheritable |= 1u << (c % 32);
    }
    if (syscall(SYS_capset, &hdr, data) < 0) die("capset");
    for (int i = 0; i < o->nkeep; i++) {
      if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, o->keep[i], 0, 0) < 0) die("raise ambient capability %d", o->keep[i]);
    }
    if (o->nkeep > 0 && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) die("reset keep-capabilities");
  }
  if (getuid() == 0 || geteuid() == 0) DIE("still root after setresuid");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs");
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "--hold-memory") == 0) return hold_memory(argc - 2, argv + 2);
  if (argc == 3 && strcmp(argv[1], "--kill-uid") == 0) {
    if (geteuid() != 0) DIE("--kill-uid must start as root");
    return kill_uid(number(argv[2], "--kill-uid", 1, 0xfffffffeL));
  }
  struct opts o;
  parse(argc, argv, &o);
  if (geteuid() != 0) DIE("must start as root (it drops to --uid %ld)", o.uid);
  pid_t parent = getppid();
  if (o.netns) enter_netns(o.netns);
  for (int i = 0; i < o.ntaps; i++) open_tap(&o.taps[i]);
  for (int i = 0; i < o.ninherits; i++) inherit_file(&o.inherits[i]);
  close_others(&o);
  if (o.root) jail(&o);
  drop_privileges(&o);
  if (o.pdeathsig) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die("pdeathsig");
    if (getppid() != parent) DIE("parent exited before the exec");
  }
  execv(o.argv[0], o.argv);
  die("exec %s", o.argv[0]);
  return EXIT_JAIL;
}
