// Command racy increments one variable from two goroutines without
// synchronisation. Built with -race, it prints a data race report, which
// the tests of StartProcess look for.
package main

import "fmt"

func main() {
	count := 0
	done := make(chan struct{})
	go func() {
		count++
		close(done)
	}()
	count++
	<-done
	fmt.Println(count)
}
