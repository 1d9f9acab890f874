/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/signal: deliver signals as completions of a signalfd read. */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

struct ur_signal {
	struct ur_loop *loop;
	int fd;
	sigset_t unblock; /* what stop unblocks: set minus the old mask */
	ur_signal_fn *fn;
	void *arg;
	struct ur_op op;
	struct ur__rearm rearm;	    /* a re-arm the backend refused */
	struct signalfd_siginfo si; /* the kernel's until op's CQE */
	bool in_fn;		    /* fn is running */
	bool stop_in_fn; /* fn called ur_signal_stop(): finish after it */
};

static void sig_cqe(struct ur_op *op);

static int sig_arm(struct ur_signal *sig)
{
	/*
	 * Offset -1: the file position, meaningless for a signalfd. The read
	 * runs as task work of this thread (signalfd polls, it is not handed
	 * to a worker), so signals sent to this thread are seen too.
	 * -errno: no SQE or no memory (the op is idle here, never -EBUSY).
	 */
	return ur_read_start(sig->loop, &sig->op, sig->fd, &sig->si,
			     sizeof(sig->si), -1);
}

/* From the loop's retry list: the signals wait in the signalfd. */
static int sig_rearm(struct ur__rearm *r)
{
	return sig_arm(ur_container_of(r, struct ur_signal, rearm));
}

static void sig_finish(struct ur_signal *sig)
{
	ur__rearm_forget(&sig->rearm);
	close(sig->fd);
	/* Unblocking delivers what is still pending, as restoring means. */
	(void)pthread_sigmask(SIG_UNBLOCK, &sig->unblock, NULL);
	free(sig);
}

static void sig_cqe(struct ur_op *op)
{
	struct ur_signal *sig = op->data;

	if (op->res == (int32_t)sizeof(sig->si)) {
		sig->in_fn = true;
		sig->fn(sig, (int)sig->si.ssi_signo, sig->arg);
		sig->in_fn = false;
		if (sig->stop_in_fn) {
			sig_finish(sig);
			return;
		}
	} else if (op->res != -EINTR && op->res != -EAGAIN) {
		/*
		 * -ECANCELED from someone else's cancel, or an error a
		 * signalfd read does not give: stop reading rather than
		 * spin. ur_signal_stop() still cleans up.
		 */
		return;
	}
	if (sig_arm(sig) < 0)
		ur__rearm_later(sig->loop, &sig->rearm);
}

int ur_signal_start(struct ur_loop *loop, const sigset_t *set, ur_signal_fn *fn,
		    void *arg, struct ur_signal **sig_out)
{
	struct ur_signal *sig;
	sigset_t old;
	int ret;

	if (loop == NULL || set == NULL || fn == NULL)
		return -EINVAL;
	if (!pthread_equal(loop->thread, pthread_self()))
		return -EINVAL; /* the mask is per thread: block it here */
	sig = calloc(1, sizeof(*sig));
	if (sig == NULL)
		return -ENOMEM;
	ret = pthread_sigmask(SIG_BLOCK, set, &old);
	if (ret != 0) {
		free(sig);
		return -ret;
	}
	sigemptyset(&sig->unblock);
	for (int s = 1; s < NSIG; s++)
		if (sigismember(set, s) == 1 && sigismember(&old, s) == 0)
			sigaddset(&sig->unblock, s);
	sig->fd = ur__fd_off_stdio(signalfd(-1, set, SFD_CLOEXEC));
	if (sig->fd < 0) {
		ret = -errno;
		(void)pthread_sigmask(SIG_UNBLOCK, &sig->unblock, NULL);
		free(sig);
		return ret;
	}
	sig->loop = loop;
	sig->fn = fn;
	sig->arg = arg;
	ur_op_init(&sig->op, sig_cqe, sig);
	ur_list_init(&sig->rearm.link);
	sig->rearm.fn = sig_rearm;
	ret = sig_arm(sig);
	if (ret < 0) {
		sig_finish(sig);
		return ret;
	}
	*sig_out = sig;
	return 0;
}

/* A signal the read took while we were stopping is raised again. */
static void sig_give_back(struct ur_signal *sig, int res)
{
	if (res == (int)sizeof(sig->si))
		(void)pthread_kill(pthread_self(), (int)sig->si.ssi_signo);
}

/* The read of a stop whose cancel the backend refused has completed. */
static void sig_stopped_cqe(struct ur_op *op)
{
	struct ur_signal *sig = op->data;

	sig_give_back(sig, op->res);
	sig_finish(sig);
}

void ur_signal_stop(struct ur_signal **sigp)
{
	struct ur_signal *sig = *sigp;

	if (sig == NULL)
		return;
	*sigp = NULL;
	if (sig->in_fn) {
		/* The read is not armed while fn runs; sig_cqe finishes. */
		sig->stop_in_fn = true;
		return;
	}
	if (ur_op_is_busy(&sig->op)) {
		/*
		 * The kernel owns sig->si until the read's CQE: cancel it and
		 * wait as a blocking call does (no callback: the CQE only
		 * ends the wait). A signal that won the race is raised again
		 * on this thread, so unblocking below delivers it as if we
		 * had never read it.
		 */
		sig->op.fn = NULL;
		if (ur_op_cancel(&sig->op) < 0) {
			/*
			 * Refused (no SQE, no memory): the read ends with the
			 * next signal, and the stop finishes then, from its
			 * CQE; the signals stay blocked until that one.
			 */
			sig->op.fn = sig_stopped_cqe;
			return;
		}
		sig_give_back(sig, ur_op_wait(&sig->op));
	}
	sig_finish(sig);
}
