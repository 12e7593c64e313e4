#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/time.hpp"
#include "loop/loop.hpp"

using namespace iot;

TEST(Loop, TimersFireInOrderRepeatAndCancel) {
    EventLoop loop;
    std::string order;
    loop.add_timer(30, [&] { order += "b"; });
    loop.add_timer(10, [&] { order += "a"; });
    int ticks = 0;
    EventLoop::TimerId rep = 0;
    rep = loop.add_timer(5, [&] {
        if (++ticks == 3) loop.cancel_timer(rep);
    }, 5);
    auto never = loop.add_timer(20, [&] { order += "X"; });
    loop.cancel_timer(never);
    loop.add_timer(60, [&] { loop.stop(); });
    loop.run();
    EXPECT_EQ(order, "ab");
    EXPECT_EQ(ticks, 3);
}

TEST(Loop, WatchesDescriptors) {
    EventLoop loop;
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    std::string got;
    EventLoop::WatchId id = loop.watch(p[0], POLLIN, [&](short) {
        char buf[16];
        ssize_t n = read(p[0], buf, sizeof buf);
        got.append(buf, static_cast<size_t>(n));
        loop.unwatch(id);
        loop.stop();
    });
    loop.add_timer(5, [&] { (void)!write(p[1], "hi", 2); });
    loop.add_timer(2000, [&] { loop.stop(); });
    loop.run();
    EXPECT_EQ(got, "hi");
    close(p[0]);
    close(p[1]);
}

TEST(Loop, SignalsArriveThroughTheLoop) {
    EventLoop loop;
    int hups = 0;
    ASSERT_TRUE(loop.on_signal(SIGUSR2, [&] {
        ++hups;
        loop.stop();
    }));
    loop.add_timer(5, [] { raise(SIGUSR2); });
    loop.add_timer(2000, [&] { loop.stop(); });
    loop.run();
    EXPECT_EQ(hups, 1);
}

TEST(Loop, ReapsRegisteredChildrenWithTheirStatus) {
    EventLoop loop;
    pid_t fast = fork();
    if (fast == 0) _exit(3);
    pid_t slow = fork();
    if (slow == 0) {
        usleep(50000);
        _exit(4);
    }
    int fast_status = -1, slow_status = -1;
    usleep(20000);  // `fast` has exited before it is watched: must still be reaped
    loop.watch_child(fast, [&](int s) { fast_status = s; });
    loop.watch_child(slow, [&](int s) {
        slow_status = s;
        loop.stop();
    });
    loop.add_timer(5000, [&] { loop.stop(); });
    loop.run();
    ASSERT_TRUE(WIFEXITED(fast_status));
    EXPECT_EQ(WEXITSTATUS(fast_status), 3);
    ASSERT_TRUE(WIFEXITED(slow_status));
    EXPECT_EQ(WEXITSTATUS(slow_status), 4);
}

TEST(Loop, IdleLoopSleepsUntilTheNextTimer) {
    EventLoop loop;
    int wakeups = 0;
    loop.add_prepare([&] { ++wakeups; });
    loop.add_timer(200, [&] { loop.stop(); });
    loop.run();
    EXPECT_LE(wakeups, 3) << "an idle loop must not spin";
}

TEST(Loop, PrepareHooksCanBeRemovedByTheirOwners) {
    EventLoop loop;
    int a = 0, b = 0;
    EventLoop::PrepareId second = 0;
    loop.add_prepare([&] {
        ++a;
        loop.remove_prepare(second);  // the owner of the second hook goes away mid-round
    });
    second = loop.add_prepare([&] { ++b; });
    loop.run_once(0);
    loop.run_once(0);
    EXPECT_EQ(a, 2);
    EXPECT_EQ(b, 0) << "a removed hook must never run again";
}
