package storemaster_test

import (
	"fmt"
	"strings"

	"github.com/retailpulse/retailpulse/storemaster"
)

func ExampleLoad() {
	const csv = `AreaCode,StoreName,StoreID
560001,"Kumar & Sons, General Store",S00000002
`
	m, err := storemaster.Load(strings.NewReader(csv), "stores.csv")
	if err != nil {
		fmt.Println(err)
		return
	}
	s, ok := m.Lookup("S00000002")
	fmt.Println(ok, s.Name, s.AreaCode)
	// Output: true Kumar & Sons, General Store 560001
}

func ExampleLoad_duplicate() {
	const csv = `AreaCode,StoreName,StoreID
560001,Lakeview Provisions,S1
560001,Sunrise Dairy,S1
`
	_, err := storemaster.Load(strings.NewReader(csv), "stores.csv")
	fmt.Println(err)
	// Output: stores.csv line 3: duplicate store id "S1" (first on line 2)
}
