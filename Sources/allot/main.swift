import AllotCLI
import Foundation

exit(await Allot.main(arguments: Array(CommandLine.arguments.dropFirst())))
