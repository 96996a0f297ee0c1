package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// childProcessAttributes puts a child in its own process group, so that a
// Ctrl-C in the terminal reaches only the benchmark, which then stops its
// children in order. Pdeathsig kills the child if the benchmark dies
// without stopping it.
func childProcessAttributes() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// terminate sends a process SIGTERM.
func terminate(process *os.Process) error {
	return process.Signal(syscall.SIGTERM)
}

// killGroup kills every process left in the process group that the child
// with this PID leads. A group that is already empty is no error.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// residentBytes returns the resident memory of the process pid (VmRSS)
// and the memory each of its descendants, such as nginx's workers, holds
// privately (Private_Clean and Private_Dirty), in bytes. Summing the
// workers' VmRSS would count the pages they share with the master, the
// binary, libraries and what they inherited at fork, once each: 8 MiB too
// much for nginx with two workers, at idle.
func residentBytes(pid int) (int64, error) {
	total, err := processMemory(pid, "status", "VmRSS:")
	if err != nil {
		return 0, err
	}
	for _, member := range cachedDescendants(pid) {
		for _, field := range []string{"Private_Clean:", "Private_Dirty:"} {
			if value, err := processMemory(member, "smaps_rollup", field); err == nil {
				total += value // else the worker exited meanwhile
			}
		}
	}
	return total, nil
}

// cachedDescendants returns descendants, listed again once a second at
// most. Memory is sampled every 50 ms, and a walk of /proc each time took
// the client about 2 % of a core, which only the targets with a process
// paid. A target's workers start with it and stay.
func cachedDescendants(pid int) []int {
	descendantsCache.Lock()
	defer descendantsCache.Unlock()
	if entry, ok := descendantsCache.byPID[pid]; ok && time.Since(entry.listed) < time.Second {
		return entry.pids
	}
	pids := descendants(pid)
	descendantsCache.byPID[pid] = listedDescendants{pids: pids, listed: time.Now()}
	return pids
}

type listedDescendants struct {
	pids   []int
	listed time.Time
}

var descendantsCache = struct {
	sync.Mutex
	byPID map[int]listedDescendants
}{byPID: map[int]listedDescendants{}}

// cpuTime returns the time on CPU that the process pid and its living
// descendants have used so far.
func cpuTime(pid int) (time.Duration, error) {
	return sumOverTree(pid, processCPU)
}

// sumOverTree sums read over the process pid and its descendants. Only
// pid's own error counts: a descendant may exit meanwhile, as a worker
// does.
func sumOverTree[T int64 | time.Duration](pid int, read func(int) (T, error)) (T, error) {
	var total T
	for _, member := range append([]int{pid}, descendants(pid)...) {
		value, err := read(member)
		if err != nil {
			if member == pid {
				return 0, err
			}
			continue
		}
		total += value
	}
	return total, nil
}

// processCPU sums the time on CPU of the process's threads, which
// /proc/PID/task/TID/schedstat gives in nanoseconds, where /proc/PID/stat
// counts in ticks of 10 ms, too coarse for short runs. The time of a
// thread that exited is lost, which Go's threads rarely do.
func processCPU(pid int) (time.Duration, error) {
	threads, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of process %d: %w", pid, err)
	}
	total := time.Duration(0)
	for _, thread := range threads {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, thread.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		first, _, _ := strings.Cut(string(data), " ")
		nanos, err := strconv.ParseInt(first, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading the CPU time of process %d: unexpected schedstat %q", pid, data)
		}
		total += time.Duration(nanos)
	}
	return total, nil
}

// processMemory reads a memory field in kB of a file in /proc/PID, such
// as "VmRSS:" of status, in bytes.
func processMemory(pid int, name, field string) (int64, error) {
	file := fmt.Sprintf("/proc/%d/%s", pid, name)
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("reading the resident memory of process %d: %w", pid, err)
	}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		rest, ok := strings.CutPrefix(scanner.Text(), field)
		if !ok {
			continue
		}
		kilobytes, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading the resident memory of process %d: invalid %s line %q in %s", pid, field, scanner.Text(), file)
		}
		return kilobytes << 10, nil
	}
	return 0, fmt.Errorf("reading the resident memory of process %d: no %s line in %s, which is a zombie's", pid, field, file)
}

// descendants returns the PIDs of every living process below pid, found by
// the parent PIDs in /proc/*/stat.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, entry := range entries {
		member, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name in brackets may contain spaces, so the fields
		// are counted after its closing bracket: state, then parent PID.
		end := bytes.LastIndexByte(data, ')')
		if end < 0 {
			continue
		}
		fields := strings.Fields(string(data[end+1:]))
		if len(fields) < 2 {
			continue
		}
		parent, err := strconv.Atoi(fields[1])
		if err != nil {
			continue
		}
		children[parent] = append(children[parent], member)
	}
	var found []int
	queue := []int{pid}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		found = append(found, children[next]...)
		queue = append(queue, children[next]...)
	}
	return found
}
