// The contract harness (tests/contract_checks.hpp) over the LinearCrossEntropy and FactoredOutputLayer cases of
// tests/contract.hpp.
#define LOSSKIT_CONTRACT_GROUP "heads"
#define LOSSKIT_CONTRACT_GROUP_CASES LOSSKIT_CONTRACT_BATCH_HEADS
#include "contract_checks.hpp"
