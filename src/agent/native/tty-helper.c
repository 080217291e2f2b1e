/*
 * tty-helper: runs an OCI runtime command (`crun run|exec --console-socket S
 * ...`) as its child, receives the container's pty master over the console
 * socket (SCM_RIGHTS, which Node cannot receive), and relays it:
 *
 *   fd 0 (a pipe from the agent)  -> pty master   (EOF: one VEOF byte, ^D)
 *   pty master                    -> fd 1 (a pipe to the agent)
 *   fd 3 (a pipe from the agent)  -> "ROWS COLS\n" lines -> TIOCSWINSZ
 *
 * It exits with the runtime's exact status: its exit code, or 128+signal when
 * the runtime itself died of a signal. Signals the helper gets (TERM, INT,
 * HUP, QUIT, USR1, USR2) are forwarded to the runtime, which forwards them to
 * the container.
 *
 * Usage: tty-helper --socket PATH [--rows N --cols N] [--no-stdin] -- RUNTIME ARGS...
 *   RUNTIME ARGS must already contain `--console-socket PATH`. With
 *   --no-stdin fd 0 is never read (and no EOF is sent to the terminal).
 *
 * Backpressure: the helper reads the master only while its buffer toward fd 1
 * is empty, and reads fd 0 only while its buffer toward the master is empty,
 * so a slow reader on either side stalls the producer instead of growing
 * memory. Built with libc only (statically when possible).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define BUF_SIZE 65536

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };
#define NFORWARDED (sizeof forwarded / sizeof forwarded[0])

static void die (const char *what)
{
  fprintf (stderr, "tty-helper: %s: %s\n", what, strerror (errno));
  exit (125);
}

static int exit_status (int status)
{
  if (WIFEXITED (status))
    return WEXITSTATUS (status);
  if (WIFSIGNALED (status))
    return 128 + WTERMSIG (status);
  return 125;
}

/* Receives one fd passed with SCM_RIGHTS on a connected unix socket. */
static int recv_fd (int sock)
{
  char data[256];
  char ctrl[CMSG_SPACE (sizeof (int) * 4)];
  struct iovec iov = { .iov_base = data, .iov_len = sizeof data };
  struct msghdr msg = { 0 };
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  ssize_t n;
  do
    n = recvmsg (sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR (&msg); c; c = CMSG_NXTHDR (&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
      {
        int fd;
        memcpy (&fd, CMSG_DATA (c), sizeof fd);
        return fd;
      }
  errno = EPROTO;
  return -1;
}

static void set_size (int master, unsigned rows, unsigned cols)
{
  struct winsize ws = { 0 };
  ws.ws_row = (unsigned short) rows;
  ws.ws_col = (unsigned short) cols;
  if (master >= 0 && rows > 0 && cols > 0)
    (void) ioctl (master, TIOCSWINSZ, &ws);
}

static void set_nonblock (int fd)
{
  int fl = fcntl (fd, F_GETFL);
  if (fl >= 0)
    (void) fcntl (fd, F_SETFL, fl | O_NONBLOCK);
}

struct buf
{
  char data[BUF_SIZE];
  size_t off, len;
};

/* Writes what it can of b to fd. Returns -1 on a hard error (peer gone). */
static int flush_buf (int fd, struct buf *b)
{
  while (b->off < b->len)
    {
      ssize_t w = write (fd, b->data + b->off, b->len - b->off);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN)
            return 0;
          return -1;
        }
      b->off += (size_t) w;
    }
  b->off = b->len = 0;
  return 0;
}

int main (int argc, char **argv)
{
  const char *sock_path = NULL;
  unsigned rows = 0, cols = 0;
  int no_stdin = 0;
  int i = 1;
  for (; i < argc; i++)
    {
      if (strcmp (argv[i], "--") == 0)
        {
          i++;
          break;
        }
      if (strcmp (argv[i], "--socket") == 0 && i + 1 < argc)
        sock_path = argv[++i];
      else if (strcmp (argv[i], "--rows") == 0 && i + 1 < argc)
        rows = (unsigned) strtoul (argv[++i], NULL, 10);
      else if (strcmp (argv[i], "--cols") == 0 && i + 1 < argc)
        cols = (unsigned) strtoul (argv[++i], NULL, 10);
      else if (strcmp (argv[i], "--no-stdin") == 0)
        no_stdin = 1;
      else
        {
          fprintf (stderr, "tty-helper: unknown argument %s\n", argv[i]);
          return 125;
        }
    }
  if (sock_path == NULL || i >= argc)
    {
      fprintf (stderr, "usage: tty-helper --socket PATH [--rows N --cols N] [--no-stdin] -- RUNTIME ARGS...\n");
      return 125;
    }

  signal (SIGPIPE, SIG_IGN);

  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen (sock_path) >= sizeof addr.sun_path)
    {
      fprintf (stderr, "tty-helper: socket path too long\n");
      return 125;
    }
  strcpy (addr.sun_path, sock_path);
  unlink (sock_path);
  int lsock = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lsock < 0)
    die ("socket");
  if (bind (lsock, (struct sockaddr *) &addr, sizeof addr) < 0)
    die ("bind");
  if (listen (lsock, 1) < 0)
    die ("listen");

  /* SIGCHLD and the forwarded signals arrive on a signalfd. */
  sigset_t mask, oldmask;
  sigemptyset (&mask);
  sigaddset (&mask, SIGCHLD);
  for (size_t k = 0; k < NFORWARDED; k++)
    sigaddset (&mask, forwarded[k]);
  if (sigprocmask (SIG_BLOCK, &mask, &oldmask) < 0)
    die ("sigprocmask");
  int sfd = signalfd (-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0)
    die ("signalfd");

  pid_t child = fork ();
  if (child < 0)
    die ("fork");
  if (child == 0)
    {
      /* The runtime's stdin is /dev/null, its stdout goes to our stderr: the
         relay pipes carry only the terminal's bytes. fd 3 is ours alone. */
      sigprocmask (SIG_SETMASK, &oldmask, NULL);
      signal (SIGPIPE, SIG_DFL);
      int devnull = open ("/dev/null", O_RDWR);
      if (devnull >= 0)
        dup2 (devnull, 0);
      dup2 (2, 1);
      close (3);
      execvp (argv[i], argv + i);
      fprintf (stderr, "tty-helper: exec %s: %s\n", argv[i], strerror (errno));
      _exit (127);
    }

  int master = -1;
  int child_status = 0;
  int child_done = 0;
  int in_open = !no_stdin; /* fd 0 */
  int out_open = 1;  /* fd 1 */
  int ctl_open = fcntl (3, F_GETFD) >= 0;
  int master_open = 0;
  struct buf to_master = { .off = 0, .len = 0 };
  struct buf to_out = { .off = 0, .len = 0 };
  char ctl[64];
  size_t ctl_len = 0;
  int eof_pending = 0;

  set_nonblock (0);
  set_nonblock (1);
  if (ctl_open)
    set_nonblock (3);

  for (;;)
    {
      /* Done: the runtime exited and the pty has nothing more to give. */
      if (child_done && !master_open && to_out.len == 0)
        break;
      if (child_done && master < 0)
        break;

      struct pollfd p[6];
      int n = 0;
      int i_sig = -1, i_lsock = -1, i_in = -1, i_master = -1, i_ctl = -1;
      p[n] = (struct pollfd) { .fd = sfd, .events = POLLIN };
      i_sig = n++;
      if (lsock >= 0)
        {
          p[n] = (struct pollfd) { .fd = lsock, .events = POLLIN };
          i_lsock = n++;
        }
      if (master_open)
        {
          short ev = 0;
          if (to_out.len == 0 && out_open)
            ev |= POLLIN;
          if (to_master.len > 0)
            ev |= POLLOUT;
          p[n] = (struct pollfd) { .fd = master, .events = ev };
          i_master = n++;
        }
      if (in_open && master_open && to_master.len == 0 && !eof_pending)
        {
          p[n] = (struct pollfd) { .fd = 0, .events = POLLIN };
          i_in = n++;
        }
      if (out_open && to_out.len > 0)
        {
          p[n] = (struct pollfd) { .fd = 1, .events = POLLOUT };
          n++;
        }
      if (ctl_open)
        {
          p[n] = (struct pollfd) { .fd = 3, .events = POLLIN };
          i_ctl = n++;
        }
      /* After the runtime exited, wait a little for the pty's last bytes. */
      int r = poll (p, (nfds_t) n, child_done ? 200 : -1);
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          die ("poll");
        }
      if (r == 0 && child_done && to_out.len == 0)
        break;

      if (p[i_sig].revents & POLLIN)
        {
          struct signalfd_siginfo si;
          while (read (sfd, &si, sizeof si) == (ssize_t) sizeof si)
            {
              if (si.ssi_signo == SIGCHLD)
                {
                  int st;
                  pid_t w;
                  while ((w = waitpid (-1, &st, WNOHANG)) > 0)
                    if (w == child)
                      {
                        child_status = st;
                        child_done = 1;
                      }
                }
              else if (!child_done)
                kill (child, (int) si.ssi_signo);
            }
        }

      if (i_lsock >= 0 && (p[i_lsock].revents & POLLIN))
        {
          int c = accept4 (lsock, NULL, NULL, SOCK_CLOEXEC);
          if (c >= 0)
            {
              master = recv_fd (c);
              close (c);
              if (master >= 0)
                {
                  close (lsock);
                  lsock = -1;
                  unlink (sock_path);
                  set_nonblock (master);
                  set_size (master, rows, cols);
                  master_open = 1;
                }
            }
        }

      if (i_ctl >= 0 && (p[i_ctl].revents & (POLLIN | POLLHUP | POLLERR)))
        {
          ssize_t k = read (3, ctl + ctl_len, sizeof ctl - 1 - ctl_len);
          if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
            {
              ctl_open = 0;
              close (3);
            }
          else if (k > 0)
            {
              ctl_len += (size_t) k;
              char *nl;
              while ((nl = memchr (ctl, '\n', ctl_len)) != NULL)
                {
                  *nl = '\0';
                  unsigned r2 = 0, c2 = 0;
                  if (sscanf (ctl, "%u %u", &r2, &c2) == 2)
                    {
                      rows = r2;
                      cols = c2;
                      set_size (master, rows, cols);
                    }
                  size_t used = (size_t) (nl - ctl) + 1;
                  memmove (ctl, ctl + used, ctl_len - used);
                  ctl_len -= used;
                }
              if (ctl_len == sizeof ctl - 1)
                ctl_len = 0; /* an over-long line: drop it */
            }
        }

      if (i_in >= 0 && (p[i_in].revents & (POLLIN | POLLHUP | POLLERR)))
        {
          ssize_t k = read (0, to_master.data, sizeof to_master.data);
          if (k > 0)
            {
              to_master.off = 0;
              to_master.len = (size_t) k;
            }
          else if (k == 0 || (errno != EAGAIN && errno != EINTR))
            {
              /* stdin closed: the terminal's end-of-file character, as if
                 typed, so a reader in canonical mode sees EOF. */
              in_open = 0;
              eof_pending = 1;
            }
        }
      if (eof_pending && master_open && to_master.len == 0)
        {
          struct termios t;
          char veof = 4;
          if (tcgetattr (master, &t) == 0 && t.c_cc[VEOF] != 0)
            veof = (char) t.c_cc[VEOF];
          to_master.data[0] = veof;
          to_master.off = 0;
          to_master.len = 1;
          eof_pending = 0;
        }

      if (i_master >= 0)
        {
          short re = p[i_master].revents;
          if (re & POLLOUT)
            {
              if (flush_buf (master, &to_master) < 0)
                to_master.off = to_master.len = 0;
            }
          if (re & (POLLIN | POLLHUP | POLLERR))
            {
              if (to_out.len == 0 && out_open)
                {
                  ssize_t k = read (master, to_out.data, sizeof to_out.data);
                  if (k > 0)
                    {
                      to_out.off = 0;
                      to_out.len = (size_t) k;
                    }
                  else if (k == 0 || (errno != EAGAIN && errno != EINTR))
                    {
                      /* EIO: every slave fd is closed, the container is gone. */
                      master_open = 0;
                    }
                }
              else if (!out_open)
                master_open = 0;
            }
        }
      else if (master_open && to_master.len > 0)
        {
          (void) flush_buf (master, &to_master);
        }

      if (to_out.len > 0)
        {
          if (flush_buf (1, &to_out) < 0)
            {
              /* The agent closed our stdout: discard from now on. */
              out_open = 0;
              to_out.off = to_out.len = 0;
            }
        }
    }

  if (!child_done)
    {
      int st;
      while (waitpid (child, &st, 0) < 0 && errno == EINTR)
        ;
      child_status = st;
    }
  if (lsock >= 0)
    unlink (sock_path);
  /* Leave fd 1 blocking for the last bytes. */
  if (to_out.len > 0 && out_open)
    {
      int fl = fcntl (1, F_GETFL);
      fcntl (1, F_SETFL, fl & ~O_NONBLOCK);
      (void) flush_buf (1, &to_out);
    }
  return exit_status (child_status);
}
