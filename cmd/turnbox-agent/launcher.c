// The agent's launcher: a small single-threaded process that starts
// commands for the agent with vfork+execve. It exists because a Go program
// cannot start a process cheaply in gVisor: Go's fork path resets every
// signal handler the runtime installed (about 56 rt_sigaction calls) in the
// child before execve, and each system call is a trap into gVisor's Sentry
// (tens of microseconds on systrap). This process never runs the Go runtime
// and installs no handlers, so its child goes straight to execve.
//
// It runs as the agent binary started with TURNBOX_LAUNCHER_FD set: the
// constructor below runs before the Go runtime starts, serves the socket
// on that descriptor and exits, so Go never initialises in this process.
//
// Protocol (host byte order; the agent is the peer on the same machine),
// over a SOCK_STREAM unix socket; see container/agent/launch_linux.go:
//
//   request: u32 payload length | u32 argc | u32 envc | u32 flags
//            with SCM_RIGHTS: the command's stdin, stdout and stderr,
//            then the payload: with flag 2 (user), u32 uid | u32 gid |
//            u32 ngroups | u32 groups[ngroups]; then
//            path NUL dir NUL argv NUL... envp NUL...
//            Flag 1 (ctty): stdin is a PTY to make the controlling
//            terminal. The child runs setsid, dup2, TIOCSCTTY, chroot (to
//            $TURNBOX_LAUNCHER_ROOT when set), setgroups,
//            setgid, setuid, chdir, execve, in that order (as Go's
//            fork path with the same SysProcAttr).
//   reply:   u32 kind | i32 pid | i32 value | u32 stage
//            kind 1 started (pid), 2 failed (value errno, stage), 3 exited
//            (pid, value wait status). Started or failed answers each
//            request in order; exited comes whenever a command is reaped.
//
// The launcher ends when the agent closes its end of the socket.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum {
	kindStarted = 1,
	kindFailed = 2,
	kindExited = 3,

	stageFork = 1,
	stageSetsid = 2,
	stageDup = 3,
	stageChdir = 4,
	stageExec = 5,
	stageRequest = 6,
	stageCtty = 7,
	stageUser = 8,
	stageChroot = 9,

	flagCtty = 1,
	flagUser = 2,
	maxGroups = 65536,

	maxPayload = 8 << 20,
};

struct reply {
	uint32_t kind;
	int32_t pid;
	int32_t value;
	uint32_t stage;
};

static int sock = -1;

// The vfork child shares our memory: it leaves why it failed here.
static volatile int child_errno, child_stage;
// root is the directory commands are chrooted into (NULL: none).
static const char *root;

static void send_reply(uint32_t kind, int32_t pid, int32_t value, uint32_t stage) {
	struct reply r = {kind, pid, value, stage};
	const char *p = (const char *)&r;
	size_t left = sizeof r;
	while (left > 0) {
		ssize_t n = send(sock, p, left, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0); // the agent is gone
		p += n;
		left -= (size_t)n;
	}
}

static int read_full(char *buf, size_t len) {
	while (len > 0) {
		ssize_t n = read(sock, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

// reap reports every exited child, then reaps it. Reporting before
// reaping means a launcher killed in between loses nothing: an unreaped
// child goes to init (the agent), which reaps it and reports its status.
static void reap(void) {
	for (;;) {
		siginfo_t si;
		memset(&si, 0, sizeof si);
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (si.si_pid == 0)
			return;
		// The wait status encoding of waitpid(2).
		int status;
		switch (si.si_code) {
		case CLD_EXITED:
			status = (si.si_status & 0xff) << 8;
			break;
		case CLD_DUMPED:
			status = (si.si_status & 0x7f) | 0x80;
			break;
		default:
			status = si.si_status & 0x7f;
		}
		send_reply(kindExited, si.si_pid, status, 0);
		int ignored;
		while (waitpid(si.si_pid, &ignored, 0) < 0 && errno == EINTR) {
		}
	}
}

// next returns the string at *p and moves *p past its NUL, or NULL if the
// payload ends first.
static char *next(char **p, char *end) {
	char *s = *p;
	char *nul = memchr(s, 0, (size_t)(end - s));
	if (nul == NULL)
		return NULL;
	*p = nul + 1;
	return s;
}

// cred is the user of a request (flag user): groups points into the
// payload.
struct cred {
	uint32_t uid, gid, ngroups;
	gid_t *groups;
};

_Static_assert(sizeof(gid_t) == sizeof(uint32_t), "gid_t is 32 bits");

// read_cred reads the user's ids at *p and moves *p past them; -1 if the
// payload ends first or holds too many groups.
static int read_cred(char **p, char *end, struct cred *cr) {
	uint32_t head[3];
	if ((size_t)(end - *p) < sizeof head)
		return -1;
	memcpy(head, *p, sizeof head);
	*p += sizeof head;
	cr->uid = head[0];
	cr->gid = head[1];
	cr->ngroups = head[2];
	if (cr->ngroups > maxGroups || (size_t)(end - *p) < (size_t)cr->ngroups * sizeof(uint32_t))
		return -1;
	// gid_t is 32 bits, as the agent sends them; copy for alignment.
	cr->groups = malloc((size_t)cr->ngroups * sizeof(gid_t) + 1);
	if (cr->groups == NULL)
		_exit(1);
	memcpy(cr->groups, *p, (size_t)cr->ngroups * sizeof(uint32_t));
	*p += (size_t)cr->ngroups * sizeof(uint32_t);
	return 0;
}

// request is a decoded request; its strings point into its payload.
struct request {
	int fds[3];
	uint32_t flags;
	struct cred cr;
	char *path, *dir;
	char **argv, **envp;
};

// exec_child runs in the vfork child: it sets up the command as asked and
// executes it, leaving why it failed in child_stage and child_errno.
__attribute__((noreturn)) static void exec_child(const struct request *r) {
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (setsid() < 0) {
		child_stage = stageSetsid;
		goto fail;
	}
	for (int i = 0; i < 3; i++) {
		// The received descriptors are above 2 (ours are open) and
		// close on exec; dup2 makes inheritable copies.
		if (dup2(r->fds[i], i) < 0) {
			child_stage = stageDup;
			goto fail;
		}
	}
	if ((r->flags & flagCtty) != 0 && ioctl(0, TIOCSCTTY, 0) < 0) {
		child_stage = stageCtty;
		goto fail;
	}
	// Before the user changes: chroot needs CAP_SYS_CHROOT.
	if (root != NULL && chroot(root) < 0) {
		child_stage = stageChroot;
		goto fail;
	}
	// Raw system calls: glibc's wrappers would try to change the ids of
	// every thread of the process, whose memory this vfork child shares.
	if ((r->flags & flagUser) != 0 &&
	    (syscall(SYS_setgroups, (long)r->cr.ngroups, r->cr.groups) < 0 ||
	     syscall(SYS_setgid, (long)r->cr.gid) < 0 ||
	     syscall(SYS_setuid, (long)r->cr.uid) < 0)) {
		child_stage = stageUser;
		goto fail;
	}
	if (r->dir[0] != 0 && chdir(r->dir) < 0) {
		child_stage = stageChdir;
		goto fail;
	}
	execve(r->path, r->argv, r->envp);
	child_stage = stageExec;
fail:
	child_errno = errno;
	_exit(127);
}

// spawn starts r's command with vfork and answers started or failed.
static void spawn(const struct request *r) {
	child_errno = 0;
	child_stage = 0;
	pid_t pid = vfork();
	if (pid == 0)
		exec_child(r);
	if (pid < 0) {
		send_reply(kindFailed, 0, errno, stageFork);
	} else if (child_stage != 0) {
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
		}
		send_reply(kindFailed, 0, child_errno, (uint32_t)child_stage);
	} else {
		send_reply(kindStarted, pid, 0, 0);
	}
}

// recv_header reads a request's header and the descriptors sent with it
// (the first three are kept in fds, counted in *nfds; more are closed).
// It returns -1 when the agent closed the socket.
static int recv_header(uint32_t hdr[4], int fds[3], int *nfds) {
	char cbuf[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = {hdr, 4 * sizeof(uint32_t)};
	struct msghdr msg = {0};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf;
	msg.msg_controllen = sizeof cbuf;
	ssize_t n;
	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int got = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < got; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (*nfds < 3)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
	size_t size = 4 * sizeof(uint32_t);
	if ((size_t)n < size && read_full((char *)hdr + n, size - (size_t)n) < 0)
		return -1;
	return 0;
}

// parse splits the payload into r's user, path, dir, argv and envp; -1
// if it does not hold them all.
static int parse(char *payload, uint32_t len, uint32_t argc, uint32_t envc, struct request *r) {
	char *p = payload, *end = payload + len;
	if ((r->flags & flagUser) != 0 && read_cred(&p, end, &r->cr) < 0)
		return -1;
	if ((r->path = next(&p, end)) == NULL || (r->dir = next(&p, end)) == NULL)
		return -1;
	for (uint32_t i = 0; i < argc; i++)
		if ((r->argv[i] = next(&p, end)) == NULL)
			return -1;
	for (uint32_t i = 0; i < envc; i++)
		if ((r->envp[i] = next(&p, end)) == NULL)
			return -1;
	return 0;
}

// serve_one reads one request and starts its command. It returns -1 when
// the agent closed the socket.
static int serve_one(void) {
	uint32_t hdr[4];
	struct request r = {{-1, -1, -1}, 0, {0}, NULL, NULL, NULL, NULL};
	int nfds = 0;
	if (recv_header(hdr, r.fds, &nfds) < 0)
		return -1;
	uint32_t len = hdr[0], argc = hdr[1], envc = hdr[2];
	r.flags = hdr[3];
	if (len > maxPayload || argc == 0 || argc > len || envc > len) {
		// The stream cannot be resynchronised: give up, the agent
		// falls back to starting commands itself.
		return -1;
	}
	char *payload = malloc((size_t)len + 1);
	r.argv = calloc((size_t)argc + 1, sizeof(char *));
	r.envp = calloc((size_t)envc + 1, sizeof(char *));
	if (payload == NULL || r.argv == NULL || r.envp == NULL)
		_exit(1);
	if (read_full(payload, len) < 0)
		return -1;
	payload[len] = 0;
	if (nfds != 3 || parse(payload, len, argc, envc, &r) < 0)
		send_reply(kindFailed, 0, EINVAL, stageRequest);
	else
		spawn(&r);
	for (int i = 0; i < nfds; i++)
		close(r.fds[i]);
	free(r.cr.groups);
	free(payload);
	free(r.argv);
	free(r.envp);
	return 0;
}

static void serve(int fd) {
	sock = fd;
	// Its name in ps and /proc/PID/comm (the executable is the agent's).
	prctl(PR_SET_NAME, "turnbox-launch", 0, 0, 0);
	// Our 0, 1 and 2 must be open so that received descriptors land
	// above them (the child's dup2 relies on it).
	for (int i = 0; i < 3; i++) {
		if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) != i)
			_exit(1);
	}
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		_exit(1);
	for (;;) {
		struct pollfd pf[2] = {{sock, POLLIN, 0}, {sfd, POLLIN, 0}};
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		if (pf[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
			}
			reap();
		}
		if (pf[0].revents) {
			if (serve_one() < 0)
				_exit(0);
		}
	}
}

__attribute__((constructor)) static void turnbox_launcher(void) {
	const char *v = getenv("TURNBOX_LAUNCHER_FD");
	if (v == NULL || v[0] == 0)
		return;
	// Commands are chrooted here (agent.WithRoot), each on its own: a
	// rollback renames a new tree into place at this path.
	root = getenv("TURNBOX_LAUNCHER_ROOT");
	if (root != NULL && root[0] == 0)
		root = NULL;
	char *end;
	long fd = strtol(v, &end, 10);
	if (*end != 0 || fd < 3)
		_exit(2);
	serve((int)fd);
	_exit(0);
}
